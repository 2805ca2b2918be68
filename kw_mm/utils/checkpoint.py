"""Loading checkpoints safely and strictly.

torch >= 2.6 loads with ``weights_only=True``: only tensors and plain containers are unpickled.
Released checkpoints are state dicts and load that way. Checkpoints written by mmengine's Runner
also carry metadata (numpy scalars, the message hub); :func:`allow_mmengine_checkpoints` adds
exactly those types to torch's allowlist, so no file is ever loaded with the safety switched off.
"""
import os
import pickle
from collections import OrderedDict
from typing import Dict, Iterable, Mapping, Optional

import torch
import torch.nn as nn

STATE_DICT_KEYS = ('state_dict', 'model', 'model_ema', 'module')
#: The statistics methods every mmengine HistoryBuffer carries (and pickles).
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit a model; the message says exactly what differs."""


def allow_mmengine_checkpoints() -> None:
    """Allow the metadata types that mmengine's Runner writes into checkpoints.

    These are data containers (numpy scalars and arrays, mmengine's log buffers and config),
    not code; anything else in a file still makes ``torch.load`` refuse it.
    """
    import numpy as np
    safe = [np.dtype, np.ndarray, np.core.multiarray._reconstruct] if hasattr(np, 'core') else []
    try:
        safe.append(np._core.multiarray._reconstruct)  # numpy >= 2
    except AttributeError:
        pass
    safe += [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    safe += [np.float64, np.float32, np.int64, np.int32, np.bool_]
    try:
        safe.append(np.core.multiarray.scalar)
    except AttributeError:
        pass
    try:
        safe.append(np._core.multiarray.scalar)
    except AttributeError:
        pass
    try:
        from mmengine.config import ConfigDict
        from mmengine.logging import HistoryBuffer, MessageHub
        safe += [HistoryBuffer, MessageHub, ConfigDict]
        # A HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, 'mean'):
        # allow exactly those lookups, never a general getattr.
        safe += [(_history_buffer_getattr, '__builtin__.getattr'),
                 (_history_buffer_getattr, 'builtins.getattr')]
    except ImportError:  # pragma: no cover
        pass
    torch.serialization.add_safe_globals(safe)


def _history_buffer_getattr(obj: object, name: str) -> object:
    """The one ``getattr`` a Runner checkpoint needs: a statistics method of HistoryBuffer.

    Anything else (``getattr`` of any other object or attribute) is refused, so allowing this
    function in place of ``getattr`` keeps ``weights_only`` loading safe.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_'):
        method = getattr(HistoryBuffer, name, None)
        # the built-in statistics (registered lazily by the first HistoryBuffer) or a
        # registered custom one that is a HistoryBuffer attribute
        if name in HISTORY_BUFFER_STATISTICS or (
                method is not None and method in HistoryBuffer._statistics_methods.values()):
            return method
    raise pickle.UnpicklingError(f'refusing getattr({obj!r}, {name!r}) in a checkpoint: only '
                                 'the statistics methods of mmengine HistoryBuffer are allowed')


def load_file(path: str, map_location: str = 'cpu') -> object:
    """``torch.load`` with ``weights_only=True`` and a clear error for missing or bad files."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    allow_mmengine_checkpoints()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f'{path} is not a loadable checkpoint (torch.load with '
                         f'weights_only=True failed: {type(err).__name__}: {err})') from err


def extract_state_dict(obj: object, source: str = 'checkpoint') -> Dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: itself, or under 'state_dict'/'model'/'model_ema'."""
    if not isinstance(obj, Mapping):
        raise ValueError(f'{source} holds a {type(obj).__name__}, not a state dict')
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return OrderedDict(obj)
    for key in STATE_DICT_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            return extract_state_dict(obj[key], f'{source}[{key!r}]')
    raise ValueError(f'{source} is neither a state dict nor a dict holding one under '
                     f'{list(STATE_DICT_KEYS)}; its keys: {list(obj)[:10]}')


def select_prefix(state_dict: Mapping[str, torch.Tensor], prefix: Optional[str]) -> Dict:
    """Keys under ``prefix`` with the prefix removed; a dict without such keys is returned as is
    (a plain backbone state dict)."""
    if not prefix:
        return OrderedDict(state_dict)
    selected = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                           if k.startswith(prefix))
    return selected if selected else OrderedDict(state_dict)


def _format_keys(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """None if ``state_dict`` fits ``model`` exactly, else a description of every difference."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k}: checkpoint {list(state_dict[k].shape)} vs model {list(own[k].shape)}'
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return None
    lines = []
    if shapes:
        lines.append('shape mismatches: ' + '; '.join(shapes[:12]) +
                     (f' ... ({len(shapes)} in all)' if len(shapes) > 12 else ''))
    if missing:
        lines.append('missing in checkpoint: ' + _format_keys(missing))
    if unexpected:
        lines.append('not in model: ' + _format_keys(unexpected))
    return '\n  '.join(lines)


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str, target: str) -> None:
    """Load every tensor or raise :class:`CheckpointMismatchError` naming both sides."""
    problem = describe_mismatch(model, state_dict)
    if problem is not None:
        raise CheckpointMismatchError(f'{source} does not match {target}:\n  {problem}')
    model.load_state_dict(state_dict, strict=True)
