"""The fast KernelWarehouse convolution (same math as ``functional.kw_conv_reference``).

:func:`kw_conv` computes what :func:`~kw_mm.cnn.functional.kw_conv_reference` computes (per-sample
kernels ``alpha @ cells``, each sample convolved with its own kernel, optional bias), forward and
backward, and is what :class:`~kw_mm.cnn.kw_conv.KWConvNd` runs by default. Where the time went in
the reference (see ``docs/speed_and_memory.md``) and what is done instead:

* **Kernels are assembled in blocks of output channels** that fit in the cache (the layer's
  plan, :func:`~kw_mm.cnn.plan.plan_layer`): for a block, one matrix product
  ``alpha @ cells[:, rows]``
  over the whole batch, the permute into the layout the convolution wants while it is still in
  the cache, and the convolution of every sample with its block right away. The reference
  assembles all ``B`` kernels at once (75 MB for a 512-channel 3x3 layer at batch 8): each such
  buffer is mapped fresh by the allocator and page-faulted in on every call, and every pass over
  it (matrix product, permute copy, the convolution's weight reorder) goes to memory. Blocking
  reads the warehouse once, keeps the passes in the cache and the buffers small enough to be
  recycled; it made the late ResNet layers 2-3x faster. Small kernels (early layers, depth-wise)
  are one block.
* **Point-wise layers** (1x1 kernels, ``groups == 1``, no padding; ``KWLinear``) are per-sample
  matrix products: the kernels are assembled straight into ``[B, gi, Cout, ci]`` (the small
  attentions are re-ordered instead of the large kernels: no permute copy) and applied with
  ``torch.bmm`` / ``baddbmm_`` instead of a grouped convolution, in the input's own memory
  format (contiguous, channels_last, or the transposed tokens of ``KWLinear``), bias fused.
* **Spatial layers** run one grouped convolution over the samples (``groups = groups * B``) per
  block, bias fused; at batch size 1 that is the plain convolution.
* **Small maps in inference** (the 7x7 stage of ResNet) assemble their kernels transposed, from
  a transposed copy of the warehouse kept between forward passes
  (:mod:`~kw_mm.cnn.fast_im2col_inference`), when the caller provides that copy
  (``transposed_cells``; :class:`~kw_mm.cnn.kw_conv.KWConvNd` does, from its warehouse manager).
* **Backward** (:class:`KWConvFunction`) walks the same blocks: the convolution's input and
  weight gradients (``aten.convolution_backward`` / ``bmm``), the kernel gradient permuted back
  in the cache and turned into the gradients of ``alpha`` and of the block's cells rows by two
  products. The kernels are not kept for the backward but re-assembled block by block
  (unless the plan says ``save_kernels``), so training keeps no ``B`` kernels per layer alive:
  peak memory is lower than the reference's.

Which of these runs, in which product order and blocks, is the layer's plan
(:mod:`kw_mm.cnn.plan`): :func:`kw_conv` looks it up (made once per shape) and
:func:`run_plan` executes it. Everything is plain ``torch`` (``mm``, ``bmm``, ``convolution``,
``convolution_backward``) and runs on any device; off the CPU the blocks bound the memory of a
layer's kernels instead of fitting a cache.
"""
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from . import fast_im2col, fast_im2col_inference
from .blocks import Block
from .functional import CONV_FUNCS, KWGeometry, strided_input
from .plan import KW_IMPLS  # noqa: F401 (the implementations use_kw_impl accepts)
from .plan import (IM2COL, IM2COL_TRANSPOSED, PIXEL_MAJOR, POINTWISE, LayerPlan, cached_plan,
                   check_kw_impl, static_shape)
from .precision import split_attentions
from .fast_im2col import incoming_grad, product_into
from .transposed_cells import transpose_cells


# ------------------------------------------------------------------------------ assembly
def _cell_rows(cells: torch.Tensor, blk: Block) -> torch.Tensor:
    """Rows ``p0:p1`` of every cell as an ``[n, (p1 - p0) * ci]`` matrix (a view)."""
    n = cells.shape[0]
    return cells.reshape(n, cells.shape[1], -1)[:, blk[0]:blk[1]].reshape(n, -1)


def _alpha_rows(alpha: torch.Tensor, geo: KWGeometry, pointwise: bool) -> torch.Tensor:
    """The attentions as the rows ``[B * M, n]`` of the assembly product.

    Spatial layers: the mixture order ``(b, s, o, i)`` as it is. Point-wise layers:
    ``(b, i, o)``, the order in which ``rows @ cells`` comes out as the ``[B, gi, Cout, ci]``
    blocks the products want (re-ordering the small attentions instead of the kernels).
    """
    batch, n = alpha.shape[0], alpha.shape[-1]
    if pointwise and geo.groups_out > 1 and geo.groups_in > 1:
        alpha = alpha.reshape(batch, geo.groups_out, geo.groups_in, n).transpose(1, 2)
    return alpha.reshape(-1, n)


def _assemble(rows: torch.Tensor, cells: torch.Tensor, geo: KWGeometry, blk: Block,
              batch: int, pointwise: bool) -> torch.Tensor:
    """A block's kernels in the layout its convolution wants.

    Point-wise: ``[B, gi, C, ci]`` (no copy). Spatial: ``[B * C, Cin/groups, *k]`` (the weight
    of the grouped convolution; one permute copy). ``C = go * (p1 - p0)`` output channels in
    the order ``(o, p)``.
    """
    flat = torch.mm(rows, _cell_rows(cells, blk))
    size = blk[1] - blk[0]
    if pointwise:
        return flat.view(batch, geo.groups_in, geo.groups_out * size, geo.cell_in)
    # (b, s, o, i, p, q) -> (b, o, p, i, q, s)
    flat = flat.view(batch, geo.groups_spatial, geo.groups_out, geo.groups_in, size,
                     geo.cell_in)
    return flat.permute(0, 2, 4, 3, 5, 1).reshape(batch * geo.groups_out * size,
                                                   geo.in_per_group,
                                                   *geo.kernel_size).contiguous()


def _kernel_grad_rows(grad_w: torch.Tensor, geo: KWGeometry, blk: Block, batch: int,
                      pointwise: bool) -> torch.Tensor:
    """The gradient of a block's kernels in the row layout of :func:`_alpha_rows`."""
    size = blk[1] - blk[0]
    if pointwise:
        return grad_w.reshape(-1, size * geo.cell_in)
    g = grad_w.reshape(batch, geo.groups_out, size, geo.groups_in, geo.cell_in,
                    geo.groups_spatial)
    # (b, o, p, i, q, s) -> (b, s, o, i, p, q)
    return g.permute(0, 5, 1, 3, 2, 4).reshape(-1, size * geo.cell_in)


# ------------------------------------------------------------------------------ convolution
def _pointwise_forward(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor],
                       geo: KWGeometry) -> torch.Tensor:
    """``y[b] = sum_i w[b, i] @ x[b, i-th channel block]`` (+ bias), kept in x's format."""
    xs = strided_input(x, geo)
    batch, spatial, channels = xs.shape[0], xs.shape[2:], w.shape[2]
    flat = xs.reshape(batch, geo.in_channels, -1)  # a view unless strided above
    ci = geo.cell_in
    # Channels-last inputs (KWLinear's tokens are laid out so) are multiplied from the right,
    # which reads them as they are and gives a channels-last output.
    if flat.stride(1) == 1 and flat.shape[2] > 1:
        tokens, out = flat.transpose(1, 2), None  # [B, L, Cin]
        for i in range(geo.groups_in):
            w_t, part = w[:, i].transpose(1, 2), tokens[:, :, i * ci:(i + 1) * ci]
            if out is None:
                out = (torch.bmm(part, w_t) if bias is None else
                       torch.baddbmm(bias.reshape(1, 1, -1), part, w_t))
            else:
                out.baddbmm_(part, w_t)
        return out.view(batch, *spatial, channels).movedim(-1, 1)
    out = None
    for i in range(geo.groups_in):
        part = flat[:, i * ci:(i + 1) * ci]
        if out is None:
            out = (torch.bmm(w[:, i], part) if bias is None else
                   torch.baddbmm(bias.reshape(1, -1, 1), w[:, i], part))
        else:
            out.baddbmm_(w[:, i], part)
    return out.view(batch, channels, *spatial)


def _pointwise_backward(x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor,
                        geo: KWGeometry, need_x: bool,
                        need_w: bool) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    xs = strided_input(x, geo)
    batch, channels, ci = xs.shape[0], w.shape[2], geo.cell_in
    flat = xs.reshape(batch, geo.in_channels, -1)
    g = grad_out.reshape(batch, channels, -1)
    grad_x = grad_w = None
    if need_w:
        grad_w = torch.empty_like(w)
        for i in range(geo.groups_in):
            product_into(grad_w[:, i], torch.bmm, g, flat[:, i * ci:(i + 1) * ci].transpose(1, 2))
    if need_x:
        parts = [torch.bmm(w[:, i].transpose(1, 2), g) for i in range(geo.groups_in)]
        grad_flat = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        grad_xs = grad_flat.view(xs.shape)
        if xs is x:
            grad_x = grad_xs
        else:
            grad_x = grad_xs.new_zeros(x.shape)
            strided_input(grad_x, geo).copy_(grad_xs)
    return grad_x, grad_w


def _batch_as_groups(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, *s]`` -> ``[1, B * C, *s]`` (a view for contiguous inputs and for B = 1)."""
    if x.shape[0] == 1:
        return x
    return x.reshape(1, -1, *x.shape[2:])


def _spatial_forward(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor],
                     geo: KWGeometry) -> torch.Tensor:
    """Every sample with its own kernel: one grouped convolution (the plain one at B = 1)."""
    batch = x.shape[0]
    if bias is not None and batch > 1:
        bias = bias.repeat(batch)
    out = CONV_FUNCS[geo.dim](_batch_as_groups(x), w, bias, groups=geo.groups * batch,
                              **geo.conv_kwargs())
    return out.view(batch, -1, *out.shape[2:])


def _spatial_backward(x: torch.Tensor, w: torch.Tensor, grad_out: torch.Tensor,
                      geo: KWGeometry, need_x: bool,
                      need_w: bool) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    batch = x.shape[0]
    # One memory format for all three (a channels-last input at batch 1 is copied; at larger
    # batches _batch_as_groups already made it contiguous).
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        _batch_as_groups(grad_out).contiguous(), _batch_as_groups(x).contiguous(), w,
        None, list(geo.stride), list(geo.padding), list(geo.dilation), False, [0] * geo.dim,
        geo.groups * batch, [need_x, need_w, False])
    if grad_x is not None:
        grad_x = grad_x.reshape(batch, -1, *grad_x.shape[2:])
    return grad_x, grad_w


# ------------------------------------------------------------------------------ blocks
def _channels(t: torch.Tensor, geo: KWGeometry, blk: Block) -> torch.Tensor:
    """The block's output channels ``[B, go, p1 - p0, L]`` of ``t`` ``[B, Cout, *s]`` (a view
    of a contiguous ``t``)."""
    return t.view(t.shape[0], geo.groups_out, geo.cell_out, -1)[:, :, blk[0]:blk[1]]


def _block_bias(bias: Optional[torch.Tensor], geo: KWGeometry,
                blk: Block) -> Optional[torch.Tensor]:
    if bias is None or blk == (0, geo.cell_out):
        return bias
    return bias.reshape(geo.groups_out, geo.cell_out)[:, blk[0]:blk[1]].reshape(-1)


def _forward_blocks(x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor,
                    bias: Optional[torch.Tensor], geo: KWGeometry, blocks: Sequence[Block],
                    pointwise: bool, keep: Optional[list]) -> torch.Tensor:
    batch = x.shape[0]
    forward = _pointwise_forward if pointwise else _spatial_forward
    rows = _alpha_rows(alpha, geo, pointwise)
    out = None
    for blk in blocks:
        w = _assemble(rows, cells, geo, blk, batch, pointwise)
        if keep is not None:
            keep.append(w)
        part = forward(x, w, _block_bias(bias, geo, blk), geo)
        if len(blocks) == 1:
            return part
        if out is None:
            out = part.new_empty(batch, geo.out_channels, *part.shape[2:])
        _channels(out, geo, blk).copy_(part.reshape(batch, geo.groups_out, blk[1] - blk[0], -1))
    return out


class KWConvFunction(torch.autograd.Function):
    """Blocked KW convolution with a backward that walks the same blocks.

    Inputs ``(x, alpha, cells, bias, plan, geo)`` (a grouped or point-wise
    :class:`~kw_mm.cnn.plan.LayerPlan` and the calling layer's geometry); see :func:`kw_conv`.
    Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, x, alpha, cells, bias, plan, geo):
        blocks, pointwise = plan.blocks, plan.path == POINTWISE
        keep = [] if plan.save_kernels else None
        out = _forward_blocks(x, alpha, cells, bias, geo, blocks, pointwise, keep)
        ctx.geo, ctx.blocks, ctx.pointwise = geo, blocks, pointwise
        ctx.save_for_backward(x, alpha, cells, *(keep or []))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grad_out = incoming_grad(grad_out)
        x, alpha, cells, *kept = ctx.saved_tensors
        geo, blocks, pointwise = ctx.geo, ctx.blocks, ctx.pointwise
        need_x, need_alpha, need_cells, need_bias = ctx.needs_input_grad[:4]
        batch = x.shape[0]
        backward = _pointwise_backward if pointwise else _spatial_backward
        rows = _alpha_rows(alpha, geo, pointwise)
        grad_x = grad_rows_alpha = grad_cells = grad_bias = None
        if need_cells:
            grad_cells = torch.empty(cells.shape, dtype=cells.dtype, device=cells.device)
        single = len(blocks) == 1
        if not single:
            grad_out = grad_out.contiguous()
        for k, blk in enumerate(blocks):
            size = blk[1] - blk[0]
            g = grad_out if single else _channels(grad_out, geo, blk).reshape(
                batch, geo.groups_out * size, *grad_out.shape[2:])
            w = kept[k] if kept else _assemble(rows, cells, geo, blk, batch, pointwise)
            gx, gw = backward(x, w, g, geo, need_x, need_alpha or need_cells)
            del w
            if gx is not None:
                grad_x = gx if grad_x is None else grad_x.add_(gx)
            if gw is not None:
                grad_rows = _kernel_grad_rows(gw, geo, blk, batch, pointwise)
                del gw
                if need_alpha:
                    part = torch.mm(grad_rows, _cell_rows(cells, blk).t())
                    grad_rows_alpha = part if grad_rows_alpha is None else \
                        grad_rows_alpha.add_(part)
                if need_cells:
                    product_into(_cell_rows(grad_cells, blk), torch.mm, rows.t(), grad_rows)
        grad_alpha = None
        if need_alpha:
            n = alpha.shape[-1]
            if pointwise and geo.groups_out > 1 and geo.groups_in > 1:
                grad_rows_alpha = grad_rows_alpha.view(batch, geo.groups_in, geo.groups_out,
                                                       n).transpose(1, 2)
            grad_alpha = grad_rows_alpha.reshape(alpha.shape)
        if need_bias:
            grad_bias = grad_out.sum(dim=[0] + list(range(2, grad_out.dim())))
        return grad_x, grad_alpha, grad_cells, grad_bias, None, None


def needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a backward can follow: grad mode on and any of ``tensors`` requiring grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def run_plan(plan: LayerPlan, x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor,
             bias: Optional[torch.Tensor],
             transposed_cells: Optional[Callable[[], torch.Tensor]] = None,
             geo: Optional[KWGeometry] = None) -> torch.Tensor:
    """Execute ``plan`` (its path, product order and blocks) on one input.

    Args:
        plan (LayerPlan): Made for ``x``'s shape (:func:`~kw_mm.cnn.plan.plan_layer`).
        x, alpha, cells, bias: As :func:`kw_conv`.
        transposed_cells (callable, optional): Returns ``cells`` as ``[n, ci, co]`` for the
            ``'im2col-transposed'`` path; without it that path transposes ``cells`` itself.
        geo (KWGeometry, optional): The calling layer's geometry (equal to ``plan.geometry``).
            Plans are shared between equal layers, so under ``torch.compile`` the plan's own
            geometry object may belong to another model; the caller's is the one Dynamo
            already guards on. Defaults to ``plan.geometry``.
    """
    geo = plan.geometry if geo is None else geo
    grad = needs_grad(x, alpha, cells, bias)
    if plan.path == IM2COL_TRANSPOSED:
        if grad:
            raise RuntimeError(f'{IM2COL_TRANSPOSED} has no backward: plan a step with '
                               'gradients with needs_grad=True')
        cells_t = transposed_cells() if transposed_cells is not None else transpose_cells(cells)
        # the block width from the blocks themselves: Dynamo traces the fields of a frozen
        # dataclass but not its properties (plan.input_block is a graph break)
        q0, q1 = plan.blocks[0]
        return fast_im2col_inference.forward(x, alpha, cells_t, bias, geo, q1 - q0)
    if plan.path == IM2COL:
        if not grad:
            return fast_im2col.forward(x, alpha, cells, bias, geo, plan.blocks,
                                       plan.order == PIXEL_MAJOR)
        return fast_im2col.KWIm2colFunction.apply(x, alpha, cells, bias, plan, geo)
    if not grad:
        return _forward_blocks(x, alpha, cells, bias, geo, plan.blocks, plan.path == POINTWISE,
                               None)
    return KWConvFunction.apply(x, alpha, cells, bias, plan, geo)


def kw_conv(x: torch.Tensor,
            alpha: torch.Tensor,
            cells: torch.Tensor,
            bias: Optional[torch.Tensor],
            geo: KWGeometry,
            block_bytes: Optional[int] = None,
            transposed_cells: Optional[Callable[[], torch.Tensor]] = None,
            kw_impl: str = 'auto',
            split_attention: bool = False) -> torch.Tensor:
    """The KW convolution: per-sample kernels ``alpha @ cells`` applied to ``x``.

    Same result as :func:`~kw_mm.cnn.functional.kw_conv_reference` (up to float rounding),
    forward and backward. Runs the layer's plan (:func:`~kw_mm.cnn.plan.cached_plan`, made once
    per input shape, dtype, device type and gradient mode).

    Args:
        x (Tensor): Input ``[B, Cin, *spatial]`` (any memory format).
        alpha (Tensor): Attentions ``[B, M, n]``.
        cells (Tensor): The warehouse ``[n, co, ci, 1, ...]``.
        bias (Tensor, optional): ``[Cout]``.
        geo (KWGeometry): The layer's shapes.
        block_bytes (int, optional): Kernel bytes per block instead of the device's budget.
        transposed_cells (callable, optional): Returns ``cells`` as ``[n, ci, co]``, kept
            between calls (:class:`~kw_mm.cnn.transposed_cells.TransposedCells`); with it the
            plan may run inference on small maps on the ``'im2col-transposed'`` path (called
            only then). Not used under ``torch.compile``, which cannot keep a copy between
            calls nor trace its checks: there the plan runs those layers on ``'im2col'``, and
            a layer forced to ``'im2col-transposed'`` (``kw_impl``) transposes the warehouse
            inside the graph at every call (inductor's freezing folds that copy into a
            constant).
        kw_impl (str): ``'auto'`` (or ``'fast'``), or a path name of
            :data:`~kw_mm.cnn.plan.PATHS` to force where it applies. Defaults to ``'auto'``.
        split_attention (bool): Under autocast, assemble the kernels from ``alpha`` split into
            two half-precision parts (:func:`~kw_mm.cnn.precision.split_attentions`), as a KW
            layer does while its temperature is above 0. Defaults to False.

    Returns:
        Tensor: ``[B, Cout, *spatial_out]``.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        # Autocast would cast op by op, and the backward runs outside of it: cast the inputs
        # once (differentiably, outside the function) and run everything in that dtype.
        dtype = torch.get_autocast_dtype(device_type)
        alpha, cells = split_attentions(alpha, cells, dtype) if split_attention else \
            (alpha.to(dtype), cells.to(dtype))
        with torch.autocast(device_type, enabled=False):
            return kw_conv(x.to(dtype), alpha, cells, None if bias is None else bias.to(dtype),
                           geo, block_bytes, kw_impl=kw_impl)
    keep_transposed = transposed_cells is not None and not torch.compiler.is_compiling()
    plan = cached_plan(geo, static_shape(x), cells.dtype, device_type,
                       needs_grad(x, alpha, cells, bias), kw_impl,
                       cells.shape[0] if keep_transposed else None, block_bytes)
    return run_plan(plan, x, alpha, cells, bias, transposed_cells if keep_transposed else None,
                    geo)


# ---------------------------------------------------------------------------- implementation switch
#: The implementation every KW layer runs while :class:`use_kw_impl` is active (else its own
#: ``kw_impl``).
_impl_override: Optional[str] = None


def get_kw_impl(layer: Optional[nn.Module] = None) -> str:
    """The implementation a KW layer runs: a :class:`use_kw_impl` block's, else the layer's
    ``kw_impl``, else ``'auto'`` (one of :data:`~kw_mm.cnn.plan.KW_IMPLS`)."""
    if _impl_override is not None:
        return _impl_override
    return getattr(layer, 'kw_impl', 'auto') if layer is not None else 'auto'


class use_kw_impl:
    """Context manager: every KW layer runs implementation ``name`` inside the block (over the
    layers' own ``kw_impl``).

    ``'auto'`` (or ``'fast'``): the layer's plan; ``'reference'``: the straightforward
    implementation (:func:`~kw_mm.cnn.functional.kw_attention_reference` and
    :func:`~kw_mm.cnn.functional.kw_conv_reference`), which the benchmark compares against and
    the tests check the fast paths with; ``'export'``: :func:`~kw_mm.cnn.export.kw_conv_export`,
    a formulation whose weights never depend on the batch size, for graph exporters (ONNX with a
    symbolic batch); a path name of :data:`~kw_mm.cnn.plan.PATHS`: that path wherever it
    applies. Blocks nest; the previous choice is restored on exit.

    Example:
        >>> with use_kw_impl('reference'):
        ...     out = model(x)
    """

    def __init__(self, name: str) -> None:
        self.name = check_kw_impl(name)
        self.previous = None

    def __enter__(self) -> 'use_kw_impl':
        global _impl_override
        self.previous, _impl_override = _impl_override, self.name
        return self

    def __exit__(self, *exc) -> None:
        global _impl_override
        _impl_override = self.previous


def apply_kw_impl(module: nn.Module, name: str) -> nn.Module:
    """Set ``kw_impl`` (:data:`~kw_mm.cnn.plan.KW_IMPLS`) on every KW layer of ``module`` (a
    layer, a backbone, a whole model); returns ``module``."""
    from .kw_conv import KWConvNd  # kw_conv imports this module
    check_kw_impl(name)
    for m in module.modules():
        if isinstance(m, KWConvNd):
            m.kw_impl = name
    return module
