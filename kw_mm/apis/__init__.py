"""The user-facing API of kw_mm: models from configs, checkpoints and names."""
from .det_inferencer import KWDetInferencer, init_detector
from .inference import config_with_options, init_model, load_weights, test_set_images

__all__ = ['KWDetInferencer', 'config_with_options', 'init_detector', 'init_model', 'load_weights',
           'test_set_images']
