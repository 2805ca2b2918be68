"""What users and tools call: build a model from a name or config; the model index."""
from .builder import build_model, load_config, model_config, register_toolbox
from .model_index import (ModelInfo, Variant, get_config_path, get_model, get_model_index,
                          get_variant, list_ablations, list_models, list_variants)

__all__ = [
    'build_model', 'load_config', 'model_config', 'register_toolbox', 'ModelInfo', 'Variant',
    'get_config_path', 'get_model', 'get_model_index', 'get_variant', 'list_ablations',
    'list_models', 'list_variants'
]
