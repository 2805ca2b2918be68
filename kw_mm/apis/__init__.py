"""What users and tools call: build a model from a name or config; the model index; models
with their weights for inference (mmpretrain's and mmdet's inferencers, ONNX export)."""
from .builder import build_model, load_config, model_config, register_toolbox
from .model_index import (ModelInfo, Variant, get_config_path, get_model, get_model_index,
                          get_variant, list_ablations, list_models, list_variants)
from .model_names import find_model, register_with_mmpretrain  # noqa: I001 (after the index)
from .inference import init_model, load_weights, resolve_config, test_set_images

#: Imported on first use: they need mmdet, which ``import kw_mm`` should not load.
_DETECTION = {'KWDetInferencer', 'init_detector'}


def __getattr__(name: str):
    if name in _DETECTION:
        from . import det_inferencer
        return getattr(det_inferencer, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'build_model', 'load_config', 'model_config', 'register_toolbox', 'ModelInfo', 'Variant',
    'get_config_path', 'get_model', 'get_model_index', 'get_variant', 'list_ablations',
    'list_models', 'list_variants', 'find_model', 'register_with_mmpretrain', 'init_model',
    'load_weights', 'resolve_config', 'test_set_images', 'KWDetInferencer', 'init_detector'
]
