"""The reference KernelWarehouse release (OSVAI/KernelWarehouse) -> kw_mm / mmpretrain.

Per family, the key mapping (:mod:`.resnet`, :mod:`.mobilenet_v2`, :mod:`.convnext`); the
family-independent conversion, variant detection and refusals live in :mod:`.convert`. The
command line is ``tools/model_converters/kw_official_to_mmpretrain.py``.

Example:
    >>> from kw_mm.converters.kw_release import convert_checkpoint
    >>> result = convert_checkpoint('kw1x_resnet50.pth', 'kw1x_resnet50_mmpretrain.pth')
    >>> result.variant.name
    'kw1x_resnet50'
"""
from .convert import (WRAPPER_KEYS, Conversion, Detection, Family, OfficialCheckpointError,
                      candidates, convert_checkpoint, convert_keys, convert_state_dict,
                      detect_family, detect_variant, load_official_checkpoint, model_shapes,
                      resolve_variant, unwrap_official, variant_shapes)

__all__ = [
    'WRAPPER_KEYS', 'Conversion', 'Detection', 'Family', 'OfficialCheckpointError', 'candidates',
    'convert_checkpoint', 'convert_keys', 'convert_state_dict', 'detect_family', 'detect_variant',
    'load_official_checkpoint', 'model_shapes', 'resolve_variant', 'unwrap_official',
    'variant_shapes'
]
