"""Build a kw_mm model from a config or a name, with a checkpoint, ready for inference.

What a tool needs outside a Runner (export, pictures, inferencers): the model of a config of
either toolbox, every tensor of the checkpoint loaded strictly (a checkpoint of another config
fails naming what differs), the KW temperature the checkpoint was validated with, eval mode.
"""
import importlib
import warnings
from typing import Any, List, Optional, Tuple, Union

import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope

from kw_mm.cnn import set_temperature
from kw_mm.engine.hooks.kw_temperature_hook import temperature_hook_in
from kw_mm.utils.checkpoint import load_file, load_state_dict_strict, unwrap_state_dict

from .builder import build_model, load_config, register_toolbox
from .model_names import find_model

ConfigType = Union[str, Config]


def resolve_config(config: ConfigType, cfg_options: Optional[dict] = None) -> Config:
    """A config from a file, a model name of the index (close matches suggested when unknown)
    or a loaded Config (copied), with ``cfg_options`` merged in."""
    if isinstance(config, str):
        cfg = load_config(config if config.endswith('.py') else find_model(config).config_path)
    else:
        cfg = config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def load_weights(model: nn.Module, checkpoint: str, cfg: Config) -> Optional[float]:
    """Load ``checkpoint`` into ``model`` strictly; return the temperature it was validated at.

    Returns:
        float | None: The t of a mid-anneal Runner checkpoint under the config's
        ``KWTemperatureHook``; None for any other checkpoint (the trained model, t = 0).

    Raises:
        CheckpointMismatchError: The checkpoint belongs to another model (every missing,
            unexpected and mis-shaped tensor is listed).
    """
    raw = load_file(checkpoint)
    state_dict, _ = unwrap_state_dict(raw, source=checkpoint)
    load_state_dict_strict(model, state_dict, source=checkpoint,
                           target=f'the model of {cfg.filename or "the config"}')
    hook = temperature_hook_in(cfg)
    return hook.checkpoint_temperature(raw) if hook is not None else None


def init_model(config: ConfigType, checkpoint: Optional[str] = None, device: str = 'cpu',
               cfg_options: Optional[dict] = None) -> Tuple[nn.Module, float]:
    """The model of an mmpretrain or mmdet config with its weights, in eval mode.

    Args:
        config (str | Config): A config file, a model name of the index or a loaded config
            (its ``default_scope`` picks the toolbox).
        checkpoint (str, optional): Weights, loaded strictly. None keeps the random
            initialization.
        device (str): Where the model goes. Defaults to ``'cpu'``.
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        tuple: The model (``model.cfg`` is its config) and the temperature t set on its KW
        layers (the checkpoint's; 0 for a trained or converted model and without weights).
    """
    cfg = resolve_config(config, cfg_options)
    model = build_model(cfg)
    if checkpoint is None:
        warnings.warn(f'{config if isinstance(config, str) else cfg.filename}: no weights '
                      'given, the model keeps its random initialization')
    t = load_weights(model, checkpoint, cfg) if checkpoint else None
    t = 0.0 if t is None else t
    set_temperature(model, t)
    model.cfg = cfg
    return model.to(device).eval(), t


def test_set_images(cfg: Any, num_images: int) -> List[str]:
    """Paths of the first ``num_images`` images of a config's test set (for pictures)."""
    if num_images < 1:
        raise ValueError(f'the number of images must be >= 1, got {num_images}')
    scope = register_toolbox(cfg)
    datasets = importlib.import_module(f'{scope}.registry').DATASETS
    with DefaultScope.overwrite_default_scope(scope):
        dataset = datasets.build(cfg.test_dataloader.dataset)
    count = min(num_images, len(dataset))
    return [dataset.get_data_info(i)['img_path'] for i in range(count)]
