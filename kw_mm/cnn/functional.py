"""Kernel assembly and convolution of KernelWarehouse layers.

A layer's static kernel ``[Cout, Cin/groups, *k]`` is cut into ``M = gs * go * gi`` cells of
shape ``[co, ci]`` (every cell is 1 in space): ``gs`` spatial positions, ``go = Cout / co`` output
blocks and ``gi = Cin / groups / ci`` input blocks. Mixture ``j = (s * go + o) * gi + i`` fills
``weight[o*co:(o+1)*co, i*ci:(i+1)*ci, s]`` with ``sum_k alpha[b, j, k] * cells[k]``.

``kw_conv_reference`` is the straightforward implementation of that math (one matmul, a permute
copy, one grouped convolution over the batch) and is kept as the correctness oracle of the fast
paths in :mod:`kw_mm.cnn.fast`.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

#: Added to the L1 norm of every mixture's logits before division (CAF).
CAF_EPS = 1e-3
#: The attention functions of the paper's Table 8; ``'caf'`` is KernelWarehouse's own.
ATTENTION_FUNCTIONS = ('caf', 'softmax', 'sigmoid', 'relu-l1')

CONV_FUNCS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def count_mixtures(weight_shape: Sequence[int], cell_out: int, cell_in: int) -> int:
    """``M``: the cells a kernel ``[Cout, Cin/groups, *k]`` is cut into (``gs * go * gi``)."""
    return (weight_shape[0] // cell_out) * (weight_shape[1] // cell_in) * math.prod(
        weight_shape[2:])


@dataclass(frozen=True)
class KWGeometry:
    """Shapes of one KW layer and of its partition into warehouse cells."""

    dim: int
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...]
    groups: int
    cell_out: int
    cell_in: int

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def groups_out(self) -> int:
        return self.out_channels // self.cell_out

    @property
    def groups_in(self) -> int:
        return self.in_per_group // self.cell_in

    @property
    def groups_spatial(self) -> int:
        n = 1
        for k in self.kernel_size:
            n *= k
        return n

    @property
    def num_mixtures(self) -> int:
        return count_mixtures(self.weight_shape, self.cell_out, self.cell_in)

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return (self.out_channels, self.in_per_group, *self.kernel_size)

    @property
    def is_pointwise(self) -> bool:
        """A sample's convolution is a matrix product: 1x1 kernel, no groups, no padding."""
        return self.groups_spatial == 1 and self.groups == 1 and not any(self.padding)

    def output_size(self, size: Tuple[int, ...]) -> Tuple[int, ...]:
        """Spatial output size for an input of spatial ``size``."""
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(
            size, self.kernel_size, self.stride, self.padding, self.dilation))

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)


def strided_input(x: torch.Tensor, geo: KWGeometry) -> torch.Tensor:
    """A point-wise layer's input at its stride (a view)."""
    if all(s == 1 for s in geo.stride):
        return x
    return x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in geo.stride)]


def normalize_logits(z: torch.Tensor, function: str = 'caf') -> torch.Tensor:
    """Normalize mixture logits ``[..., n + 1]`` (zero cell last) with an attention function.

    Args:
        z (Tensor): Logits; the last dimension runs over the cells and the zero cell.
        function (str): One of :data:`ATTENTION_FUNCTIONS` (paper Table 8):

            - ``'caf'``: the contrasting-driven attention function ``z / (sum |z| + eps)``
              (the paper's design, signed attentions);
            - ``'softmax'``: ``softmax(z)`` over the ``n + 1`` entries;
            - ``'sigmoid'``: ``sigmoid(z)``, entry by entry;
            - ``'relu-l1'``: ``max(z, 0) / (sum |z| + eps)`` (CAF without negative attentions).

    Returns:
        Tensor: Attentions of the same shape (zero-cell column included).
    """
    if function == 'caf':
        return z / (z.abs().sum(dim=-1, keepdim=True) + CAF_EPS)
    if function == 'softmax':
        return torch.softmax(z, dim=-1)
    if function == 'sigmoid':
        return torch.sigmoid(z)
    if function == 'relu-l1':
        return z.clamp(min=0) / (z.abs().sum(dim=-1, keepdim=True) + CAF_EPS)
    raise ValueError(f'attention_function must be one of {list(ATTENTION_FUNCTIONS)}, got '
                     f'{function!r}')


def kw_attention_reference(z: torch.Tensor, beta: torch.Tensor, t: float,
                           function: str = 'caf') -> torch.Tensor:
    """The straightforward normalization and temperature mix of ``KWAttention``.

    Args:
        z (Tensor): Mixture logits ``[B, M, n + 1]`` (zero cell last).
        beta (Tensor): The one-hot initialization ``[M, n + 1]``.
        t (float): The temperature.
        function (str): The attention function (:func:`normalize_logits`). Defaults to
            ``'caf'``.

    Returns:
        Tensor: ``alpha`` ``[B, M, n]`` (a strided view; the zero-cell column dropped).
    """
    a = normalize_logits(z, function)
    a = (1.0 - t) * a + t * beta
    return a[..., :-1]


def assemble_kernels_reference(alpha: torch.Tensor, cells: torch.Tensor,
                               geo: KWGeometry) -> torch.Tensor:
    """Per-sample kernels ``[B, Cout, Cin/groups, *k]`` from attentions ``[B, M, n]``."""
    batch = alpha.shape[0]
    flat = torch.mm(alpha.reshape(batch * geo.num_mixtures, -1), cells.reshape(cells.shape[0], -1))
    flat = flat.reshape(batch, geo.groups_spatial, geo.groups_out, geo.groups_in, geo.cell_out,
                        geo.cell_in)
    # -> [B, go, co, gi, ci, gs]: output channel = o*co + p, input channel = i*ci + q.
    kernels = flat.permute(0, 2, 4, 3, 5, 1)
    return kernels.reshape(batch, *geo.weight_shape)


def kw_conv_reference(x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor,
                      bias: Optional[torch.Tensor], geo: KWGeometry) -> torch.Tensor:
    """The straightforward KW convolution: one grouped conv with ``groups = groups * B``."""
    batch = x.shape[0]
    kernels = assemble_kernels_reference(alpha, cells, geo)
    out = CONV_FUNCS[geo.dim](x.reshape(1, -1, *x.shape[2:]),
                              kernels.reshape(-1, *kernels.shape[2:]),
                              None, groups=geo.groups * batch, **geo.conv_kwargs())
    out = out.view(batch, geo.out_channels, *out.shape[2:])
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * geo.dim))
    return out
