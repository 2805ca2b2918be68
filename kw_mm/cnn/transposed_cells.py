"""Warehouses kept transposed for inference: cells ``[n, ci, co]`` instead of ``[n, co, ci]``.

The inference path for small maps (:mod:`kw_mm.cnn.fast_im2col_inference`) assembles kernels
already transposed, ``W^T[(s, i, q), p]``, the layout its per-sample products run fastest on;
that needs the cells with the output row ``p`` innermost. Transposing a warehouse costs about
as much as what it saves in one layer (it reads and writes the whole warehouse), so the copy is
made once and kept while the weights stay the same, one per warehouse (the layers sharing a
warehouse share it). It costs memory: one more copy of the warehouses those layers draw from,
held until the model switches between training and evaluation or
:meth:`TransposedCells.clear` is called (``eval()`` on a model already evaluating keeps them).

A kept copy is used only while its warehouse is provably the same tensor with the same values:
same storage (``.data`` replaced, ``.to()``, ``.half()`` start over), same version counter (every
in-place write through autograd-visible ops, ``load_state_dict``, an optimizer step), and the
same sampled values (a write through ``.data``, which the version counter does not see, as
mmengine's EMA hook swaps weights). Switching the module between ``train()`` and ``eval()``
drops every copy. What this cannot see: a write through ``.data`` that leaves all sampled values
as they were (editing a few cells in place); after such an edit call
``WarehouseManager.clear_transposed_cells()`` (or switch the model to ``train()`` and back).
"""
from typing import Dict, NamedTuple, Tuple

import torch

#: Values of a warehouse compared on every use (evenly spaced over the whole tensor).
FINGERPRINT_SAMPLES = 64


class _Entry(NamedTuple):
    key: Tuple
    fingerprint: torch.Tensor
    transposed: torch.Tensor


def _key(cells: torch.Tensor) -> Tuple:
    return (cells.data_ptr(), cells._version, cells.dtype, cells.device, tuple(cells.shape),
            cells.stride())


def _fingerprint(cells: torch.Tensor) -> torch.Tensor:
    flat = cells.detach().reshape(-1)
    step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
    return flat[::step].clone()


def transpose_cells(cells: torch.Tensor) -> torch.Tensor:
    """A warehouse ``[n, co, ci, 1, ...]`` as a contiguous ``[n, ci, co]`` (a copy)."""
    n, co, ci = cells.shape[:3]
    return cells.detach().reshape(n, co, ci).transpose(1, 2).contiguous()


class TransposedCells:
    """The transposed copies of one :class:`~kw_mm.cnn.warehouse.WarehouseManager`'s
    warehouses, by warehouse index."""

    def __init__(self) -> None:
        self._entries: Dict[int, _Entry] = {}

    def get(self, index: int, cells: torch.Tensor) -> torch.Tensor:
        """Warehouse ``index`` (whose current tensor is ``cells``) as ``[n, ci, co]``: the kept
        copy when ``cells`` is unchanged since it was made, else a new one (kept)."""
        if torch.compiler.is_compiling():
            # A compiled graph cannot keep a copy between calls nor check one (storage
            # address, version counter): it transposes in the graph. Inductor's freezing
            # (``torch._inductor.config.freezing``) folds that copy into a constant for
            # inference graphs.
            return transpose_cells(cells)
        key, entry = _key(cells), self._entries.get(index)
        if entry is not None and entry.key == key and torch.equal(entry.fingerprint,
                                                                  _fingerprint(cells)):
            return entry.transposed
        transposed = transpose_cells(cells)
        self._entries[index] = _Entry(key, _fingerprint(cells), transposed)
        return transposed

    def clear(self) -> None:
        """Drop every kept copy (their memory is freed)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # copies (deepcopy, pickling a model) start empty: a copy's weights are other tensors
    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self._entries = {}
