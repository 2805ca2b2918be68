"""The user-facing API of kw_mm: models from configs, checkpoints and names."""
from .inference import init_model, load_config, load_weights

__all__ = ['init_model', 'load_config', 'load_weights']
