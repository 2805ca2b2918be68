"""``torch.compile`` in the tools: ``--compile`` and mmengine's ``compile`` config key.

mmengine's Runner reads ``compile`` (``True`` or a dict of :func:`torch.compile` arguments) and
compiles the model's ``train_step`` when training starts; it compiles nothing for
``Runner.test()``. ``tools/train.py --compile`` sets the key, ``tools/test.py --compile`` sets it
too and compiles the model's ``test_step`` the same way (:func:`compile_test_step`).
"""
from typing import Any, Mapping, Optional

import torch


def compile_options(cfg: Mapping) -> Optional[dict]:
    """The :func:`torch.compile` arguments of ``cfg['compile']``; None when it is off.

    Raises:
        TypeError: If the key is neither a bool nor a dict.
    """
    value = cfg.get('compile', False)
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f'compile must be True, False or a dict of torch.compile arguments, got '
                    f'{value!r}')


def enable_compile(cfg: Any) -> Any:
    """Turn ``cfg['compile']`` on (a dict already there is kept); returns ``cfg``."""
    if not compile_options(cfg):
        cfg.compile = True
    return cfg


def compile_test_step(runner: Any) -> bool:
    """Compile ``runner.model.test_step`` with the config's ``compile`` arguments, as mmengine
    compiles ``train_step`` for training (on the wrapper when the model is wrapped).

    Returns:
        bool: Whether the step was compiled (False when the config leaves ``compile`` off).
    """
    options = compile_options(runner.cfg)
    if options is None:
        return False
    runner.model.test_step = torch.compile(runner.model.test_step, **options)
    return True
