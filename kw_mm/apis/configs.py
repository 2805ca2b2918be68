"""Config files as data: read one, take the model out of it. Knows nothing of the model index or
of building (:mod:`kw_mm.apis.model_index` reads the configs it lists with it;
:mod:`kw_mm.apis.builder` resolves names through the index and builds)."""
import os.path as osp
from typing import Any, Mapping


def read_config(path: str) -> Any:
    """An mmengine ``Config`` from the config file ``path``."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    return Config.fromfile(path)


def model_of_config(cfg: Mapping) -> dict:
    """The ``model`` of a loaded config, as a plain dict whose top-level type carries the
    config's scope (``mmpretrain.ImageClassifier``), with the config's top-level
    ``data_preprocessor`` merged in as the Runner does."""
    if cfg.get('model') is None:
        raise ValueError(f'config {getattr(cfg, "filename", "?")} has no model')
    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    if '.' not in str(model_cfg.get('type', '')):
        # Unprefixed types resolve in the config's default scope.
        model_cfg['type'] = f'{cfg.get("default_scope", "mmpretrain")}.{model_cfg["type"]}'
    preprocessor = cfg.get('data_preprocessor')
    if preprocessor is not None:
        model_cfg.setdefault('data_preprocessor', dict(preprocessor))
    return model_cfg
