"""One way to build a model: from an index name, a config file, a loaded config or a model dict.

Models are built through the real registries of the toolbox their config names
(``default_scope``: mmpretrain or mmdet); ``kw_mm.`` types resolve through kw_mm's scope.
"""
import importlib
from typing import Any, Mapping, Union

import torch.nn as nn

from .configs import model_of_config, read_config
from .model_index import get_config_path

#: default_scope -> the module whose ``register_all_modules`` sets the toolbox up.
TOOLBOXES = {'mmpretrain': 'mmpretrain.utils', 'mmdet': 'mmdet.utils'}
DEVICES = ('cpu', 'meta')


def register_toolbox(cfg: Mapping) -> str:
    """Register the modules of the toolbox named by ``cfg.default_scope`` and of kw_mm.

    Returns:
        str: The toolbox (``'mmpretrain'`` or ``'mmdet'``).
    """
    scope = cfg.get('default_scope')
    if scope not in TOOLBOXES:
        name = getattr(cfg, 'filename', None) or 'the config'
        raise ValueError(f'{name} has default_scope={scope!r}; kw_mm tools support '
                         f'{sorted(TOOLBOXES)}')
    _register(scope)
    return scope


def _register(scope: str) -> None:
    importlib.import_module(TOOLBOXES[scope]).register_all_modules(init_default_scope=False)
    importlib.import_module('kw_mm')  # registers kw_mm's models and hooks


def load_config(config: str) -> Any:
    """An mmengine ``Config`` from a config file or the name of a model of the index."""
    return read_config(config if config.endswith('.py') else get_config_path(config))


def model_config(config: Union[str, Mapping]) -> dict:
    """The ``model`` of a config (file, index name or loaded), as a plain dict whose top-level
    type carries the config's scope (``mmpretrain.ImageClassifier``), with the config's
    top-level ``data_preprocessor`` merged in as the Runner does."""
    return model_of_config(load_config(config) if isinstance(config, str) else config)


def build_model(model: Union[str, Mapping], device: str = 'cpu') -> nn.Module:
    """Build a model through the real registries.

    Args:
        model (str | Mapping): The name of a model of the index, a config file (``*.py``), a
            loaded config (with ``model`` and ``default_scope``) or a model config dict (its
            ``type`` prefixed by its toolbox, e.g. ``mmpretrain.ImageClassifier``; mmpretrain
            if not).
        device (str): ``'cpu'`` for a real model, ``'meta'`` for shapes only (parameters and
            buffers without memory or initialization). Defaults to ``'cpu'``.
    """
    if device not in DEVICES:
        raise ValueError(f'device must be one of {list(DEVICES)}, got {device!r}')
    if isinstance(model, str) or 'model' in model:
        cfg = load_config(model) if isinstance(model, str) else model
        scope = register_toolbox(cfg)
        from mmengine.registry import init_default_scope
        init_default_scope(scope)
        model_cfg = model_config(cfg)
    else:
        model_cfg = dict(model)
        prefix = str(model_cfg.get('type', '')).split('.')[0]
        scope = prefix if prefix in TOOLBOXES else 'mmpretrain'
        _register(scope)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    # mmdet's detectors read their sub-configs by attribute (``train_cfg.rpn``): a ConfigDict.
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope
    model_cfg = ConfigDict(model_cfg)
    # mmengine resolves unprefixed sub-module types (``ClsDataPreprocessor``) in the registry of
    # the *current default scope*, whatever registry ``build`` is called on: pin it to the
    # model's toolbox so the result does not depend on what ran before in the process.
    with DefaultScope.overwrite_default_scope(scope):
        if device == 'meta':
            from .meta import meta_device
            with meta_device():
                return registry.build(model_cfg)
        return registry.build(model_cfg)
