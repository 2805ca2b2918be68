"""Image loading that names the file it could not read.

A zero-byte or corrupt image stops a run with ``cv2.error ... !buf.empty() in function
'imdecode_'`` or ``failed to load image`` and, from a worker process, without the dataset index.
:class:`LoadImageFromFile` is the toolboxes' transform (mmcv's, used by mmpretrain and mmdet)
and re-raises its errors naming the file and the sample's index in the dataset, so a bad image
is found when the loader meets it, without reading every file before training
(``tools/misc/verify_dataset.py`` does that once per new copy of a data set).
"""
from typing import Optional

from mmcv.transforms import LoadImageFromFile as ToolboxLoadImageFromFile
from mmengine.logging import print_log

from kw_mm.registry import TRANSFORMS


class ImageLoadError(RuntimeError):
    """An image of the data set could not be read (the message names it)."""


def _where(results: dict) -> str:
    index = results.get('sample_idx')
    return results.get('img_path', '?') + (f' (dataset index {index})'
                                           if index is not None else '')


@TRANSFORMS.register_module()
class LoadImageFromFile(ToolboxLoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (same arguments) that names the file it fails on.

    An unreadable file raises :class:`ImageLoadError` with its path, its dataset index and the
    toolbox's error. With ``ignore_empty=True`` (the toolbox's knob) the sample is skipped, as
    mmcv does (the dataset draws another one in training), and a warning names it.
    """

    def transform(self, results: dict) -> Optional[dict]:
        try:
            loaded = super().transform(results)
        except Exception as err:  # noqa: BLE001 - any reader error is a bad image
            raise ImageLoadError(
                f'cannot read image {_where(results)}: {type(err).__name__}: '
                f'{str(err).strip() or "no message"}; find every unreadable file with '
                '`python tools/misc/verify_dataset.py CONFIG`, or skip such files with '
                'ignore_empty=True in LoadImageFromFile') from err
        if loaded is None:
            print_log(f'skipped unreadable image {_where(results)} (ignore_empty=True)',
                      logger='current', level=30)
        return loaded
