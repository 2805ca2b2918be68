"""Loading checkpoints safely and strictly.

torch >= 2.6 loads with ``weights_only=True``: only tensors and plain containers are unpickled.
Released checkpoints are state dicts and load that way. Checkpoints written by mmengine's Runner
also carry metadata (numpy scalars, the message hub); :func:`allow_mmengine_checkpoints` adds
exactly those types to torch's allowlist, so no file is ever loaded with the safety switched off.
"""
import os
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

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


def is_state_dict(obj: object) -> bool:
    """A non-empty mapping of names to tensors."""
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap_state_dict(obj: object, key: str = 'auto', source: str = 'checkpoint',
                      keys: Sequence[str] = STATE_DICT_KEYS) -> Tuple[Dict[str, torch.Tensor], str]:
    """The state dict inside a loaded checkpoint, and where it was found.

    A state dict saved from a ``DistributedDataParallel`` wrapper loses its ``module.`` prefix.

    Args:
        obj (object): The loaded checkpoint.
        key (str): ``'auto'`` (a bare state dict, else the first of ``keys`` holding one), or
            one of ``keys``. Defaults to ``'auto'``.
        source (str): The checkpoint's name, for messages. Defaults to ``'checkpoint'``.
        keys (Sequence[str]): Where a training checkpoint may keep the weights, in the order
            they are looked for. Defaults to :data:`STATE_DICT_KEYS`.

    Returns:
        tuple: ``(state_dict, where)``; ``where`` is ``'state dict'`` or ``"['model']"`` etc.

    Raises:
        ValueError: If there is no state dict where asked, naming what the checkpoint holds.
    """
    allowed = ('auto', ) + tuple(keys)
    if key not in allowed:
        raise ValueError(f'key must be one of {list(allowed)}, got {key!r}')
    if not isinstance(obj, Mapping):
        raise ValueError(f'{source} holds a {type(obj).__name__}, not a state dict or a dict '
                         'holding one')
    if key == 'auto':
        if is_state_dict(obj):
            return _strip_module_prefix(obj), 'state dict'
        for candidate in keys:
            if is_state_dict(obj.get(candidate)):
                return _strip_module_prefix(obj[candidate]), f'[{candidate!r}]'
        raise ValueError(f'{source} is neither a state dict nor a dict holding one under '
                         f'{list(keys)}; its top-level keys: {sorted(map(str, obj))[:12]}')
    if not is_state_dict(obj.get(key)):
        present = [k for k in keys if is_state_dict(obj.get(k))]
        raise ValueError(f'{source} has no state dict under {key!r}; state dicts found under: '
                         f'{present or "none"}')
    return _strip_module_prefix(obj[key]), f'[{key!r}]'


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    if all(k.startswith('module.') for k in state_dict):
        return OrderedDict((k[len('module.'):], v) for k, v in state_dict.items())
    return OrderedDict(state_dict)


def select_prefix(state_dict: Mapping[str, torch.Tensor], prefix: Optional[str]) -> Dict:
    """Keys under ``prefix`` with the prefix removed; a dict without such keys is returned as is
    (a plain backbone state dict)."""
    if not prefix:
        return OrderedDict(state_dict)
    selected = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                           if k.startswith(prefix))
    return selected if selected else OrderedDict(state_dict)


# ---------------------------------------------------------------------- mismatch reports
Shapes = Dict[str, Tuple[int, ...]]


@dataclass
class Mismatch:
    """How a state dict differs from a model's (every difference, in the model's key order)."""

    shapes: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # key, ckpt, model
    missing: List[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: List[str] = field(default_factory=list)  # in the checkpoint, not in the model

    def __bool__(self) -> bool:
        return bool(self.shapes or self.missing or self.unexpected)

    @property
    def size(self) -> int:
        return len(self.shapes) + len(self.missing) + len(self.unexpected)


@dataclass(frozen=True)
class WarehouseInfo:
    """What a report may say about a model's warehouse besides its shape."""

    name: str  # the warehouse's name in the model (e.g. 'layer1')
    num_mixtures: int  # m: the cells its layers mix, so cells / m is the budget
    budget: float  # b of the model


def state_dict_shapes(model: nn.Module) -> Shapes:
    """Key -> shape of ``model``'s state dict."""
    return OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())


def compare_state_dict(state_dict: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple]
                       ) -> Mismatch:
    """Every difference between a state dict and a model's key -> shape."""
    mismatch = Mismatch()
    for key, shape in shapes.items():
        if key not in state_dict:
            mismatch.missing.append(key)
        elif tuple(state_dict[key].shape) != tuple(shape):
            mismatch.shapes.append((key, tuple(state_dict[key].shape), tuple(shape)))
    mismatch.unexpected = [k for k in state_dict if k not in shapes]
    return mismatch


_WAREHOUSE_KEY = re.compile(r'^(?:(\w+)\.)?warehouse_manager\.weights\.(\d+)$')


def _warehouse_label(key: str, warehouses: Mapping[str, WarehouseInfo]) -> Optional[str]:
    m = _WAREHOUSE_KEY.match(key)
    if not m:
        return None
    owner = '' if m.group(1) in (None, 'backbone') else f'{m.group(1)} '
    info = warehouses.get(key)
    return f'{owner}warehouse {m.group(2)}' + (f' ({info.name})' if info else '')


def _shape_text(shape: Sequence[int]) -> str:
    return '[' + ', '.join(map(str, shape)) + ']'


def headline(mismatch: Mismatch, warehouses: Optional[Mapping[str, WarehouseInfo]] = None
             ) -> Tuple[str, str]:
    """The most telling difference: (what the checkpoint has, what the model expects).

    A warehouse that differs is the clearest sign of another budget or layout, so it comes
    first, said in cells (``warehouse 0: 348 cells`` vs ``87``); with the model's
    ``warehouses`` (key -> :class:`WarehouseInfo`) also in budgets (``b~4`` vs ``b=1``).
    """
    warehouses = warehouses or {}
    ordered = sorted(mismatch.shapes, key=lambda s: _WAREHOUSE_KEY.match(s[0]) is None)
    if ordered:
        key, have, want = ordered[0]
        label = _warehouse_label(key, warehouses)
        info = warehouses.get(key)
        if label and have[1:] == want[1:]:
            if info is None:
                return f'{label}: {have[0]} cells', f'{want[0]}'
            return (f'{label}: {have[0]} cells, b~{have[0] / info.num_mixtures:g}',
                    f'{want[0]} (b={info.budget:g})')
        if label:
            return (f'{label}: {have[0]} cells of {_shape_text(have[1:])}',
                    f'{want[0]} cells of {_shape_text(want[1:])}')
        return f'{key}: {_shape_text(have)}', _shape_text(want)
    have = (f'{len(mismatch.unexpected)} keys the model does not have, e.g. '
            f'{mismatch.unexpected[0]}' if mismatch.unexpected else 'no other keys')
    want = (f'{len(mismatch.missing)} keys the checkpoint does not have, e.g. '
            f'{mismatch.missing[0]}' if mismatch.missing else 'no other keys')
    return have, want


def first_keys(items: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` of ``items`` and how many there are in all."""
    shown = ', '.join(items[:limit])
    return shown + (f', ... ({len(items)} in all)' if len(items) > limit else '')


def describe(mismatch: Mismatch, limit: int = 8) -> str:
    """Every difference, ``limit`` of each kind."""
    lines = []
    if mismatch.shapes:
        shown = [f'{k}: checkpoint {_shape_text(h)} vs model {_shape_text(w)}'
                 for k, h, w in mismatch.shapes]
        more = f' ... ({len(shown)} in all)' if len(shown) > limit else ''
        lines.append('shape mismatches: ' + '; '.join(shown[:limit]) + more)
    if mismatch.missing:
        lines.append('missing in checkpoint: ' + first_keys(mismatch.missing, limit))
    if mismatch.unexpected:
        lines.append('not in model: ' + first_keys(mismatch.unexpected, limit))
    return '\n  '.join(lines)


def mismatch_message(mismatch: Mismatch, checkpoint: str, target: str,
                     warehouses: Optional[Mapping[str, WarehouseInfo]] = None) -> str:
    """``{checkpoint} ({has}) but {target} expects {want}`` and every difference below it."""
    have, want = headline(mismatch, warehouses)
    return f'{checkpoint} ({have}) but {target} expects {want}\n  {describe(mismatch)}'


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str, target: str) -> None:
    """Load every tensor or raise :class:`CheckpointMismatchError` naming both sides."""
    mismatch = compare_state_dict(state_dict, state_dict_shapes(model))
    if mismatch:
        raise CheckpointMismatchError(mismatch_message(mismatch, source, target))
    model.load_state_dict(state_dict, strict=True)
