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

An :class:`Epilogue` carries what follows a layer into its formulation when an export-time
transform (:mod:`kw_mm.deployment.export_fold`) folds it there: an evaluation BatchNorm as a
per-output-channel factor on the assembled kernels plus a bias, and the activation after it.
The bias becomes the ``Conv``'s own bias input and the activation follows the ``Conv``
directly (inside the scan body, before the batch is unfolded), where ONNX Runtime fuses both
into the convolution as it does for a plain model's ``Conv`` + BatchNorm + activation.
A point-wise layer with an epilogue runs as a spatial one (a 1x1 ``Conv``), so that its bias and
activation fuse too.
"""
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from .functional import CONV_FUNCS, KWGeometry, strided_input

BatchSize = Union[int, torch.SymInt]
Activation = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Epilogue:
    """What follows a KW layer, folded into its export formulation.

    The layer then computes ``act(scale * conv(x) + shift)`` (per output channel), with
    ``scale`` applied to the per-sample kernels and ``shift`` (plus the layer's own bias times
    ``scale``) as the convolution's bias.

    Args:
        scale (Tensor): ``[Cout]`` factors (an evaluation BatchNorm's ``weight / std``).
        shift (Tensor): ``[Cout]`` offsets (the BatchNorm's ``bias - mean * scale``).
        act (callable, optional): An element-wise activation applied last.
    """

    scale: torch.Tensor
    shift: torch.Tensor
    act: Optional[Activation] = None

    def bias(self, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The bias of the folded layer, given the layer's own ``bias``."""
        return self.shift if bias is None else bias * self.scale + self.shift

    def scale_kernels(self, kernels: torch.Tensor) -> torch.Tensor:
        """Per-sample kernels ``[B, Cout, ...]`` times ``scale`` per output channel."""
        return kernels * self.scale.view(1, -1, *([1] * (kernels.dim() - 2)))

    def apply(self, out: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The epilogue on a layer's output ``[B, Cout, ...]`` computed without it (``bias``
        already added): the same values, for implementations that do not fold it."""
        view = (1, -1) + (1, ) * (out.dim() - 2)
        out = out * self.scale.view(view) + self.shift.view(view)
        return out if self.act is None else self.act(out)


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


def batch_folded_conv(x: torch.Tensor, kernels: torch.Tensor, geo: KWGeometry, batch: int,
                      bias: Optional[torch.Tensor] = None,
                      act: Optional[Activation] = None) -> torch.Tensor:
    """All samples in one grouped convolution, the batch folded into the channels (``groups *
    batch`` groups: a static batch size). At batch 1 it is the plain convolution. ``bias``
    (``[Cout]``) and ``act`` apply before the batch is unfolded, next to the ``Conv``."""
    out = CONV_FUNCS[geo.dim](x.reshape(1, batch * geo.in_channels, *x.shape[2:]),
                              kernels.reshape(batch * geo.out_channels, *geo.weight_shape[1:]),
                              None if bias is None else bias.repeat(batch),
                              groups=geo.groups * batch, **geo.conv_kwargs())
    if act is not None:
        out = act(out)
    return out.reshape(batch, geo.out_channels, *out.shape[2:])


def scanned_conv(x: torch.Tensor, kernels: torch.Tensor, geo: KWGeometry,
                 bias: Optional[torch.Tensor] = None,
                 act: Optional[Activation] = None) -> torch.Tensor:
    """Each sample convolved with its own kernel by a scan over the batch (any batch size);
    ``bias`` (``[Cout]``) and ``act`` run in the scan body, next to the ``Conv``."""
    from torch._higher_order_ops.scan import scan
    conv = CONV_FUNCS[geo.dim]
    kwargs = dict(groups=geo.groups, **geo.conv_kwargs())

    def one_sample(carry: torch.Tensor, sample):
        xi, wi, *bi = sample
        out = conv(xi, wi, bi[0] if bi else None, **kwargs)
        if act is not None:
            out = act(out)
        # The carry is unused (scan needs one) and must not alias its input: a fresh scalar.
        return carry + 0, out

    # The samples are scanned as [1, Cin, ...] slices of [B, 1, Cin, ...] and the body returns
    # [1, Cout, ...]: no Unsqueeze or Squeeze runs per sample, and the body's last node (the
    # Conv or its activation) writes straight into the Scan's output. The body can only read
    # tensors it is given: the bias is scanned too, one copy per sample (a [B, Cout] Expand,
    # small beside the kernels).
    xs = (x.unsqueeze(1), kernels)
    if bias is not None:
        xs += (bias.expand(x.shape[0], -1), )
    _, out = scan(one_sample, x.new_zeros(()), xs)
    return out.flatten(1, 2)


def kw_conv_export(x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor,
                   bias: Optional[torch.Tensor], geo: KWGeometry,
                   epilogue: Optional[Epilogue] = None) -> torch.Tensor:
    """The KW convolution in operators that export with a static or symbolic batch (see the
    module docstring).

    Args:
        x (Tensor): Input ``[B, Cin, *spatial]``.
        alpha (Tensor): Attentions ``[B, M, n]``.
        cells (Tensor): The warehouse ``[n, co, ci, 1, ...]``.
        bias (Tensor, optional): ``[Cout]``.
        geo (KWGeometry): The layer's shapes.
        epilogue (Epilogue, optional): A BatchNorm (and activation) folded into the layer.

    Returns:
        Tensor: ``[B, Cout, *spatial_out]``, equal to ``kw_conv_reference``'s (followed by the
        epilogue) up to rounding.
    """
    kernels = assemble_kernels(alpha, cells, geo)
    act = None
    if epilogue is not None:
        kernels, bias, act = epilogue.scale_kernels(kernels), epilogue.bias(bias), epilogue.act
    batch: BatchSize = x.shape[0]
    if geo.is_pointwise and epilogue is None:
        out = pointwise_conv(x, kernels, geo)
        if bias is not None:
            out = out + bias.view(1, -1, *([1] * geo.dim))
        return out if act is None else act(out)
    if isinstance(batch, int):
        return batch_folded_conv(x, kernels, geo, batch, bias, act)
    return scanned_conv(x, kernels, geo, bias, act)
