"""mmdet's ``DetInferencer`` for kw_mm's detection configs, found by config path or by name.

mmdet's inferencer looks model names up in mmdet's own metafiles and loads weights with
``strict=False`` (a checkpoint of another model silently leaves layers random). The subclass
here takes kw_mm's names, loads every tensor strictly (or fails naming what differs), runs the KW
layers at the checkpoint's temperature (0 for a trained detector) and takes the class names from
the config's test set; everything else (pipeline, batching,
``DetLocalVisualizer`` pictures, result files) is mmdet's.
"""
import warnings
from typing import Optional, Union

import torch.nn as nn
from mmdet.apis import DetInferencer
from mmengine.config import Config

from kw_mm.cnn import set_temperature

from .builder import register_toolbox
from .inference import load_weights
from .model_names import find_model


def config_dataset_meta(cfg: Config) -> dict:
    """Class names (and palette) of a config's test set: its ``metainfo``, else its dataset
    class's ``METAINFO`` (COCO's 80 classes for the COCO configs)."""
    from mmdet.registry import DATASETS
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # dataset wrappers
        dataset = dataset.dataset
    meta = dict(getattr(DATASETS.get(dataset.type), 'METAINFO', {}))
    meta.update(dataset.get('metainfo') or {})
    return {k.lower(): v for k, v in meta.items()}


class KWDetInferencer(DetInferencer):
    """``DetInferencer`` with kw_mm names, strict weights and the KW temperature.

    Args:
        model (str | Config): A kw_mm detection config (path or loaded), or its name in
            kw_mm's model index (e.g. ``'mask-rcnn_kw-r50_1x_coco'``).
        weights (str, optional): A checkpoint (Runner checkpoint or state dict), loaded
            strictly. None builds the model with random initialization (and says so).
        device (str, optional): Defaults to the available device.
        **kwargs: Other ``DetInferencer`` arguments (``palette``, ``show_progress``).
    """

    def __init__(self, model: Union[str, Config], weights: Optional[str] = None,
                 device: Optional[str] = None, **kwargs) -> None:
        register_toolbox({'default_scope': 'mmdet'})
        self.kw_weights = weights
        self.kw_temperature = 0.0
        super().__init__(model=model, weights=None, device=device, scope='mmdet', **kwargs)

    def _load_model_from_metafile(self, model: str):
        # mmdet looks names up in its own metafiles; kw_mm's are in kw_mm's index.
        return Config.fromfile(find_model(model, task='detection').config_path), None

    def _load_weights_to_model(self, model: nn.Module, checkpoint: Optional[dict],
                               cfg: Config) -> None:
        # mmdet passes the checkpoint it loaded itself (non-strictly); ours is loaded here.
        if self.kw_weights is None:
            warnings.warn(f'{cfg.filename}: no weights given, the model keeps its random '
                          'initialization')
            t = None
        else:
            t = load_weights(model, self.kw_weights, cfg)
        self.kw_temperature = 0.0 if t is None else t
        set_temperature(model, self.kw_temperature)
        model.dataset_meta = config_dataset_meta(cfg)


def init_detector(model: Union[str, Config], weights: Optional[str] = None,
                  device: Optional[str] = None, **kwargs) -> KWDetInferencer:
    """A detection inferencer for a kw_mm config path or name.

    Example:
        >>> from kw_mm.apis import init_detector
        >>> inferencer = init_detector('mask-rcnn_kw-r50_1x_coco', 'epoch_12.pth')
        >>> result = inferencer('demo.jpg', out_dir='outputs')  # outputs/vis/demo.jpg
    """
    return KWDetInferencer(model, weights, device, **kwargs)
