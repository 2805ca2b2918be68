"""The export formulation of the KernelWarehouse convolution (same math as
``functional.kw_conv_reference``), for ONNX and other graph exporters.

The straightforward KW convolution convolves the whole batch with one grouped convolution whose
``groups`` is ``groups * B`` and whose weight is the stack of the ``B`` per-sample kernels. An
ONNX ``Conv`` takes a computed weight, but its ``group`` is an attribute: a constant of the
graph. :func:`kw_conv_export` therefore picks its operators by what the tracer knows about the
batch size:

* **Kernel assembly by MatMul** straight into the per-sample kernels ``[B, Cout, Cin / groups,
  *k]``, with the transposed warehouse so that no kernel is transposed afterwards
  (:func:`assemble_kernels`).
* **Point-wise layers** (1x1, no groups, no padding; ``KWLinear``) at any batch: one batched
  MatMul ``[B, Cout, Cin] @ [B, Cin, L]`` (:func:`pointwise_conv`), no loop, no copy of the
  input.
* **Spatial layers at a batch size known when tracing** (a static-batch export; batch 1 is a
  plain ``Conv`` whose weight is a computed tensor): one grouped ``Conv`` with the batch folded
  into the channels, ``groups * B`` groups (:func:`batch_folded_conv`).
* **Spatial layers at a symbolic batch** (a dynamic-batch export): a ``torch.scan`` over the
  samples, each convolved with its own kernel (:func:`scanned_conv`), exported as an ONNX
  ``Scan`` whose body is one ``Conv``. ONNX Runtime runs the body's ``Conv`` on slices of the
  batch without copying them: the input is read once, as a plain convolution reads it.

No formulation copies the input once per kernel tap: the convolutions are the runtime's own
(im2col or direct), which is what makes the exported graph about as fast as the PyTorch path.
:func:`~kw_mm.cnn.fast.use_kw_impl` ``('export')`` selects this implementation; it also runs in
eager PyTorch (any batch), which the tests compare with the reference.
"""
import math
from typing import Optional, Union

import torch

from .functional import CONV_FUNCS, KWGeometry, strided_input

BatchSize = Union[int, torch.SymInt]


def assemble_kernels(alpha: torch.Tensor, cells: torch.Tensor,
                     geo: KWGeometry) -> torch.Tensor:
    """Per-sample kernels ``[B, Cout, Cin / groups, *k]`` from attentions ``[B, M, n]``.

    A kernel's kernel taps are its innermost dimension, but they index the attentions, not the
    cells: the product ``alpha @ cells`` puts them outermost and would need a transpose of
    every sample's kernel (the largest tensors of the graph) after it. Spatial layers therefore
    multiply the other way round, ``cells^T [co * ci, n] @ alpha^T [n, k]`` for every sample
    and block of mixtures, which writes the taps innermost: only the small attentions are
    transposed (the transposed warehouse is a constant of the graph, folded once by the
    runtime). Only layers that split the input channels into several cells (``gi > 1``) still
    swap two blocks of their kernels. The batch stays ``-1`` in every reshape, so a symbolic
    batch traces to one graph.
    """
    n, taps = cells.shape[0], geo.groups_spatial
    go, gi = geo.groups_out, geo.groups_in
    if taps == 1:  # point-wise: [B, (o, i), n] @ [n, (p, q)], one product for the whole batch
        kernels = torch.matmul(alpha, cells.reshape(n, -1))
    else:  # (b, s, o, i, k) -> (b, o, i, k, s), then [(p, q), n] @ [n, s] per (b, o, i)
        alpha_t = alpha.reshape(-1, taps, go, gi, n).permute(0, 2, 3, 4, 1)
        kernels = torch.matmul(cells.reshape(n, -1).t(), alpha_t)
    kernels = kernels.reshape(-1, go, gi, geo.cell_out, geo.cell_in * taps)
    if gi > 1:  # (b, o, i, p, (q, s)) -> (b, o, p, i, (q, s))
        kernels = kernels.permute(0, 1, 3, 2, 4)
    return kernels.reshape(-1, *geo.weight_shape)


def pointwise_conv(x: torch.Tensor, kernels: torch.Tensor, geo: KWGeometry) -> torch.Tensor:
    """A point-wise layer as one batched matrix product ``[B, Cout, Cin] @ [B, Cin, L]``."""
    x = strided_input(x, geo)
    out_size = x.shape[2:]
    out = torch.matmul(kernels.reshape(-1, geo.out_channels, geo.in_channels),
                       x.reshape(-1, geo.in_channels, math.prod(out_size)))
    return out.reshape(-1, geo.out_channels, *out_size)


def batch_folded_conv(x: torch.Tensor, kernels: torch.Tensor, geo: KWGeometry,
                      batch: int) -> torch.Tensor:
    """All samples in one grouped convolution, the batch folded into the channels (``groups *
    batch`` groups: a static batch size). At batch 1 it is the plain convolution."""
    out = CONV_FUNCS[geo.dim](x.reshape(1, batch * geo.in_channels, *x.shape[2:]),
                              kernels.reshape(batch * geo.out_channels, *geo.weight_shape[1:]),
                              None, groups=geo.groups * batch, **geo.conv_kwargs())
    return out.reshape(batch, geo.out_channels, *out.shape[2:])


def scanned_conv(x: torch.Tensor, kernels: torch.Tensor, geo: KWGeometry) -> torch.Tensor:
    """Each sample convolved with its own kernel by a scan over the batch (any batch size)."""
    from torch._higher_order_ops.scan import scan
    conv = CONV_FUNCS[geo.dim]
    kwargs = dict(groups=geo.groups, **geo.conv_kwargs())

    def one_sample(carry: torch.Tensor, sample):
        xi, wi = sample
        # The carry is unused (scan needs one) and must not alias its input: a fresh scalar.
        return carry + 0, conv(xi.unsqueeze(0), wi, None, **kwargs).squeeze(0)

    _, out = scan(one_sample, x.new_zeros(()), (x, kernels))
    return out


def kw_conv_export(x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor,
                   bias: Optional[torch.Tensor], geo: KWGeometry) -> torch.Tensor:
    """The KW convolution in operators that export with a static or symbolic batch (see the
    module docstring).

    Args:
        x (Tensor): Input ``[B, Cin, *spatial]``.
        alpha (Tensor): Attentions ``[B, M, n]``.
        cells (Tensor): The warehouse ``[n, co, ci, 1, ...]``.
        bias (Tensor, optional): ``[Cout]``.
        geo (KWGeometry): The layer's shapes.

    Returns:
        Tensor: ``[B, Cout, *spatial_out]``, equal to ``kw_conv_reference``'s up to rounding.
    """
    kernels = assemble_kernels(alpha, cells, geo)
    batch: BatchSize = x.shape[0]
    if geo.is_pointwise:
        out = pointwise_conv(x, kernels, geo)
    elif isinstance(batch, int):
        out = batch_folded_conv(x, kernels, geo, batch)
    else:
        out = scanned_conv(x, kernels, geo)
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * geo.dim))
    return out
