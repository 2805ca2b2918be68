"""Data transforms registered in the ``kw_mm`` scope (``type='kw_mm.LoadImageFromFile'``)."""
from .loading import ImageLoadError, LoadImageFromFile

__all__ = ['ImageLoadError', 'LoadImageFromFile']
