"""The evaluation form of a KW attention's MLP: BatchNorm folded into ``fc1``, kept between calls.

In evaluation a KW attention's hidden vector is ``ReLU(BN(fc1(pool(x))))`` with the BatchNorm's
running statistics, an affine map per hidden unit that folds into ``fc1``:
``W' = W * s[:, None]``, ``b' = beta + (b - mean) * s`` with ``s = gamma / sqrt(var + eps)``. The
attention then runs as ``pool, addmm, relu_, linear`` and the CAF normalization: at batch 1 these
small operations, not their arithmetic, are what an attention costs, so every operation and
module call left out counts.

The folded ``fc1`` is computed once and kept while the parameters and statistics it comes from
are provably the same: same storage (``.to()``, ``.half()``, ``load_state_dict(assign=True)``
start over) and same version counter (every in-place write through autograd-visible ops,
``load_state_dict``, an optimizer step, a BatchNorm statistics update). A write through ``.data``
is not seen by the version counter (mmengine's EMA hook swaps weights so): the kept copy is
dropped whenever the attention switches between ``train()`` and ``eval()``, which mmengine's
loops do after their hooks have swapped the weights (``eval()`` on an attention already
evaluating keeps it: inference code that calls ``eval()`` before every batch would otherwise
fold at every batch). After editing weights through ``.data`` while evaluating, switch the
model to ``train()`` and back, as for the warehouses kept transposed
(:mod:`~kw_mm.cnn.transposed_cells`).

Under ``torch.compile`` nothing is kept: the fold is part of the traced graph (version counters
and storage addresses are Python-side state Dynamo does not trace).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn


def fold_batch_norm(fc1: nn.Linear,
                    norm: nn.modules.batchnorm._BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(W'^T, b')``: ``norm(fc1(p))`` of an evaluating BatchNorm as ``addmm(b', p, W'^T)``."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean if fc1.bias is None else fc1.bias - norm.running_mean
    bias = shift * scale
    if norm.bias is not None:
        bias = bias + norm.bias
    return (fc1.weight * scale[:, None]).t().contiguous(), bias


def _key(fc1: nn.Linear, norm: nn.Module) -> tuple:
    return tuple(None if t is None else (t.data_ptr(), t._version)
                 for t in (fc1.weight, fc1.bias, norm.weight, norm.bias, norm.running_mean,
                           norm.running_var))


class FoldedLinear:
    """The folded ``fc1`` of one attention, kept while its sources are unchanged."""

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._folded: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def get(self, fc1: nn.Linear, norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(W'^T, b')`` (see :func:`fold_batch_norm`); call it without autograd recording."""
        if torch.compiler.is_compiling():
            return fold_batch_norm(fc1, norm)
        key = _key(fc1, norm)
        if key != self._key:
            self._folded = fold_batch_norm(fc1, norm)
            self._key = key
        return self._folded

    @property
    def kept(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The kept ``(W'^T, b')``, None if there is none."""
        return self._folded

    def clear(self) -> None:
        """Drop the kept weights."""
        self._key = self._folded = None

    # copies (deepcopy, pickling a model) start empty: a copy's parameters are other tensors
    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def can_fold(norm: nn.Module) -> bool:
    """Whether ``norm`` is a BatchNorm normalizing with its running statistics."""
    return (isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training
            and norm.running_mean is not None and norm.running_var is not None)
