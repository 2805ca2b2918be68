"""The fast KernelWarehouse convolution (same math as ``functional.kw_conv_reference``).

:func:`kw_conv` computes what :func:`~kw_mm.cnn.functional.kw_conv_reference` computes (per-sample
kernels ``alpha @ cells``, each sample convolved with its own kernel, optional bias), forward and
backward, and is what :class:`~kw_mm.cnn.kw_conv.KWConvNd` runs by default. Where the time went in
the reference (see ``docs/speed.md``) and what is done instead:

* **Kernels are assembled in blocks of output channels** that fit in the cache
  (:func:`~kw_mm.cnn.blocks.plan_blocks`): for a block, one matrix product ``alpha @ cells[:, rows]``
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
  (:data:`SAVE_KERNELS`), so training keeps no ``B`` kernels per layer alive: peak memory is
  lower than the reference's.

Everything is plain ``torch`` (``mm``, ``bmm``, ``convolution``, ``convolution_backward``) and
runs on any device; on devices other than the CPU a layer is a single block.
"""
from typing import Callable, Optional, Sequence, Tuple

import torch

from . import fast_im2col, fast_im2col_inference
from .blocks import Block, plan_blocks, plan_input_block
from .functional import CONV_FUNCS, KWGeometry, strided_input

#: Keep the assembled kernels for the backward instead of re-assembling them there.
SAVE_KERNELS = False


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
            torch.bmm(g, flat[:, i * ci:(i + 1) * ci].transpose(1, 2), out=grad_w[:, i])
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

    Inputs ``(x, alpha, cells, bias, geo, blocks)``; see :func:`kw_conv`. Not twice
    differentiable.
    """

    @staticmethod
    def forward(ctx, x, alpha, cells, bias, geo, blocks):
        pointwise = geo.is_pointwise
        keep = [] if SAVE_KERNELS else None
        out = _forward_blocks(x, alpha, cells, bias, geo, blocks, pointwise, keep)
        ctx.geo, ctx.blocks, ctx.pointwise = geo, blocks, pointwise
        ctx.save_for_backward(x, alpha, cells, *(keep or []))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
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
                    torch.mm(rows.t(), grad_rows, out=_cell_rows(grad_cells, blk))
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


def kw_conv(x: torch.Tensor,
            alpha: torch.Tensor,
            cells: torch.Tensor,
            bias: Optional[torch.Tensor],
            geo: KWGeometry,
            block_bytes: Optional[int] = None,
            transposed_cells: Optional[Callable[[], torch.Tensor]] = None) -> torch.Tensor:
    """The KW convolution: per-sample kernels ``alpha @ cells`` applied to ``x``.

    Same result as :func:`~kw_mm.cnn.functional.kw_conv_reference` (up to float rounding),
    forward and backward.

    Args:
        x (Tensor): Input ``[B, Cin, *spatial]`` (any memory format).
        alpha (Tensor): Attentions ``[B, M, n]``.
        cells (Tensor): The warehouse ``[n, co, ci, 1, ...]``.
        bias (Tensor, optional): ``[Cout]``.
        geo (KWGeometry): The layer's shapes.
        block_bytes (int, optional): Kernel bytes per block (see :func:`plan_blocks`).
        transposed_cells (callable, optional): Returns ``cells`` as ``[n, ci, co]``
            (:class:`~kw_mm.cnn.transposed_cells.TransposedCells`); called only in inference
            on small maps (:func:`~kw_mm.cnn.fast_im2col_inference.uses_input_blocks`), which
            then run on that path. Without it they run the im2col path.

    Returns:
        Tensor: ``[B, Cout, *spatial_out]``.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        # Autocast would cast op by op, and the backward runs outside of it: cast the inputs
        # once (differentiably, outside the function) and run everything in that dtype.
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return kw_conv(x.to(dtype), alpha.to(dtype), cells.to(dtype),
                           None if bias is None else bias.to(dtype), geo, block_bytes)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, alpha, cells, bias))
    if fast_im2col.use_im2col(geo, x):
        if (not needs_grad and transposed_cells is not None
                and fast_im2col_inference.uses_input_blocks(geo, x, cells.shape[0])):
            block = plan_input_block(geo, x.shape[0], cells.element_size(), cells.device,
                                     block_bytes)
            return fast_im2col_inference.forward(x, alpha, transposed_cells(), bias, geo, block)
        blocks = plan_blocks(geo, x.shape[0], cells.element_size(), cells.device, block_bytes,
                             path='im2col-train' if needs_grad else 'im2col')
        if not needs_grad:
            return fast_im2col.forward(x, alpha, cells, bias, geo, blocks)
        return fast_im2col.KWIm2colFunction.apply(x, alpha, cells, bias, geo, blocks)
    blocks = plan_blocks(geo, x.shape[0], cells.element_size(), cells.device, block_bytes)
    if not needs_grad:
        return _forward_blocks(x, alpha, cells, bias, geo, blocks, geo.is_pointwise, None)
    return KWConvFunction.apply(x, alpha, cells, bias, geo, blocks)


# ---------------------------------------------------------------------------- implementation switch
#: The implementations :class:`~kw_mm.cnn.kw_conv.KWConvNd` can run.
KW_IMPLS = ('fast', 'reference', 'export')
_impl = 'fast'


def get_kw_impl() -> str:
    """The implementation KW layers run: ``'fast'`` (default), ``'reference'`` or ``'export'``."""
    return _impl


def set_kw_impl(name: str) -> None:
    """Make every KW layer run ``name``: ``'fast'``, ``'reference'`` or ``'export'``.

    ``'reference'`` runs :func:`~kw_mm.cnn.functional.kw_attention_reference` and
    :func:`~kw_mm.cnn.functional.kw_conv_reference`: the straightforward implementation the
    benchmark compares against and the tests check the fast paths with. ``'export'`` runs
    :func:`~kw_mm.cnn.export.kw_conv_export`, a formulation whose weights never depend on the
    batch size, for graph exporters (ONNX with a symbolic batch).
    """
    global _impl
    if name not in KW_IMPLS:
        raise ValueError(f'KW implementation must be one of {KW_IMPLS}, got {name!r}')
    _impl = name


class use_kw_impl:
    """Context manager running KW layers with another implementation.

    Example:
        >>> with use_kw_impl('reference'):
        ...     out = model(x)
    """

    def __init__(self, name: str) -> None:
        if name not in KW_IMPLS:
            raise ValueError(f'KW implementation must be one of {KW_IMPLS}, got {name!r}')
        self.name = name
        self.previous = None

    def __enter__(self) -> 'use_kw_impl':
        self.previous = get_kw_impl()
        set_kw_impl(self.name)
        return self

    def __exit__(self, *exc) -> None:
        set_kw_impl(self.previous)
