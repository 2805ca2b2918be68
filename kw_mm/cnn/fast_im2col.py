"""KW convolution as per-sample matrix products over im2col columns (dense 2-D layers).

The grouped-convolution path of :mod:`kw_mm.cnn.fast` pays twice for a layer whose kernel is
large next to its feature map (the late ResNet layers: a 512x512x3x3 kernel for a 7x7 map): the
assembled kernels are permuted into the convolution's ``[B * Cout, Cin, kh, kw]`` layout, and
the convolution library reorders them again into its own. This path needs neither:

* **Kernels assembled output-row-major.** The product ``alpha @ cells`` is taken as a batch of
  products over the cells' output rows ``p``: ``W[p] = rows @ cells[:, p, :]``, i.e.
  ``W[p, (b, o, s, i), q]``. Read for one sample and one output block ``o``, that buffer *is*
  the ``[co, kh * kw * Cin]`` matrix an im2col product wants (rows ``p``, columns
  ``(s, i, q)`` = (spatial position, input channel)), a strided view: no permute copy.
* **im2col columns in (spatial position, channel) order**, ``[B, kh * kw * Cin, Ho * Wo]``,
  gathered once per layer (cheap for small maps; the layer's plan sends only those here,
  :func:`kw_mm.cnn.plan.im2col_rule`), and one ``bmm`` over the batch per block and output
  group, channel-major (``W @ cols``) or pixel-major (``cols^T @ W^T``, the plan's product
  order for maps of few pixels).
* **Blocks of output rows** (the plan's row blocks, :mod:`kw_mm.cnn.blocks`): the kernels of a
  block are assembled and used while they are in the cache, the buffers stay small and are
  reused.
* **Backward** walks the same blocks: the column gradient ``W^T @ grad`` (folded back by
  col2im), the kernel gradient ``grad @ cols^T`` written straight into the same
  output-row-major layout, and from it the gradients of ``alpha`` and of the cells by two
  batched products with the cells (no kernels kept between forward and backward).

Same math as :func:`~kw_mm.cnn.functional.kw_conv_reference`, checked by
``tests/test_cnn/test_fast.py``; plain ``torch`` (``bmm``), so it runs on any device.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .blocks import Block
from .functional import KWGeometry, strided_input

# ------------------------------------------------------------------------------ layouts


def _taps(geo: KWGeometry, out_hw: Tuple[int, int]) -> List[Tuple[slice, slice]]:
    """For every kernel position ``s`` (row-major), the window of the padded input it reads."""
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel_size, geo.stride, geo.dilation
    ho, wo = out_hw
    return [(slice(r * dh, r * dh + sh * (ho - 1) + 1, sh),
             slice(c * dw, c * dw + sw * (wo - 1) + 1, sw)) for r in range(kh) for c in range(kw)]


def im2col(x: torch.Tensor, geo: KWGeometry) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """Columns ``[B, kh * kw * Cin, Ho * Wo]`` in (spatial position, channel) order.

    Point-wise layers: the input itself (a view for stride 1, in the input's memory format).
    """
    batch, channels = x.shape[:2]
    out_hw = geo.output_size(tuple(x.shape[2:]))
    if geo.is_pointwise:
        return strided_input(x, geo).reshape(batch, channels, -1), out_hw
    # Every kernel position's window of the padded input as one view [B, kh, kw, C, Ho, Wo],
    # gathered by a single copy: one parallel region instead of one per kernel position
    # (short regions are what a competing process makes expensive).
    windows = kernel_windows(x, geo).permute(0, 4, 5, 1, 2, 3)
    return gathered(windows).view(batch, -1, out_hw[0] * out_hw[1]), out_hw


def gathered(windows: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of a view (the one copy that gathers im2col columns).

    Always a copy, never a reshape that copies or not depending on the strides: under
    ``torch.compile`` that choice is made on the strides the tracer predicted, and a 1x1 map
    (both contiguous and channels-last) may be padded into either layout at run time.
    """
    return windows.clone(memory_format=torch.contiguous_format)


def kernel_windows(x: torch.Tensor, geo: KWGeometry) -> torch.Tensor:
    """The padded input's window of every output pixel, ``[B, C, Ho, Wo, kh, kw]`` (a view of
    the padded input).

    Built by ``unfold`` (a view op that reads the input's actual strides) rather than
    ``as_strided`` with strides read from the input: under ``torch.compile`` those would be
    the strides the tracer predicted, fixed in the graph, and a feature map that arrives in
    another layout at run time (a 1x1 map is both contiguous and channels-last) would be read
    wrongly, without an error.
    """
    ph, pw = geo.padding
    padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel_size, geo.stride, geo.dilation
    windows = padded.unfold(2, (kh - 1) * dh + 1, sh).unfold(3, (kw - 1) * dw + 1, sw)
    return windows[..., ::dh, ::dw] if dh > 1 or dw > 1 else windows


def col2im(grad_cols: torch.Tensor, geo: KWGeometry, x_shape: torch.Size,
           out_hw: Tuple[int, ...]) -> torch.Tensor:
    """The gradient of :func:`im2col`: columns summed back onto the input ``x_shape``."""
    if geo.is_pointwise:
        grad = grad_cols.view(*x_shape[:2], *out_hw)
        if all(s == 1 for s in geo.stride):
            return grad
        grad_x = grad.new_zeros(x_shape)
        strided_input(grad_x, geo).copy_(grad)
        return grad_x
    batch, channels, height, width = x_shape
    ph, pw = geo.padding
    padded = grad_cols.new_zeros(batch, channels, height + 2 * ph, width + 2 * pw)
    cols = grad_cols.view(batch, geo.groups_spatial, channels, *out_hw)
    for s, (rows, columns) in enumerate(_taps(geo, out_hw)):
        padded[:, :, rows, columns] += cols[:, s]
    return padded[:, :, ph:ph + height, pw:pw + width]


def mixture_rows(alpha: torch.Tensor, geo: KWGeometry) -> torch.Tensor:
    """Attentions ``[B, M, n]`` (mixtures ``(s, o, i)``) as rows ``(b, o, s, i)``: for a sample
    and an output block, the mixtures then run in im2col column order."""
    batch, n = alpha.shape[0], alpha.shape[-1]
    a = alpha.reshape(batch, geo.groups_spatial, geo.groups_out, geo.groups_in, n)
    return a.transpose(1, 2).reshape(-1, n)


def _rows_to_alpha(grad_rows: torch.Tensor, geo: KWGeometry, batch: int) -> torch.Tensor:
    n = grad_rows.shape[-1]
    g = grad_rows.view(batch, geo.groups_out, geo.groups_spatial, geo.groups_in, n)
    return g.transpose(1, 2).reshape(batch, geo.num_mixtures, n)


def _cells_by_row(cells: torch.Tensor) -> torch.Tensor:
    """The warehouse ``[n, co, ci, 1, ...]`` as ``[co, n, ci]`` (a view)."""
    return cells.reshape(cells.shape[0], cells.shape[1], -1).transpose(0, 1)


def _kernels(block: torch.Tensor, geo: KWGeometry, batch: int, o: int) -> torch.Tensor:
    """The ``[B, rows, kh * kw * Cin]`` im2col kernels of output group ``o`` in a block
    ``[rows, B * M, ci]`` (a strided view)."""
    k = geo.groups_spatial * geo.in_per_group
    return block.view(block.shape[0], batch, geo.groups_out, k)[:, :, o].transpose(0, 1)


def _out_rows(t: torch.Tensor, geo: KWGeometry, blk: Block, o: int) -> torch.Tensor:
    """Output channels ``o * co + p`` (``p`` in the block) of ``t`` ``[B, Cout, L]``."""
    start = o * geo.cell_out
    return t[:, start + blk[0]:start + blk[1]]


def _out_columns(t: torch.Tensor, geo: KWGeometry, blk: Block, o: int) -> torch.Tensor:
    """The same channels of a pixel-major ``t`` ``[B, L, Cout]``."""
    start = o * geo.cell_out
    return t[:, :, start + blk[0]:start + blk[1]]


# ------------------------------------------------------------------------------ passes
def product_into(out: torch.Tensor, product, *args: torch.Tensor) -> torch.Tensor:
    """``product(*args, out=out)`` for an ``out`` that may be a strided view: written in place
    in eager mode; under ``torch.compile``, which cannot trace ``out=`` into a non-contiguous
    view, computed and copied into it (the compiler plans the buffers itself)."""
    if torch.compiler.is_compiling():
        return out.copy_(product(*args))
    return product(*args, out=out)


def incoming_grad(grad_out: torch.Tensor) -> torch.Tensor:
    """The output gradient a backward of this package starts from: as it is in eager mode; under
    ``torch.compile`` a contiguous copy.

    A compiled graph traces a custom Function's backward with the gradient in the layout the
    tracer predicted, and turns the backward's reshapes into views where that layout allows.
    The predicted layout can differ from the one the gradient arrives in at run time (a
    LayerNorm over permuted channels, as in ConvNeXt, hands back a channels-last gradient where
    the prediction is contiguous), and a view on it then fails: the copy makes both layouts
    contiguous (eager mode reads the actual strides and needs no copy)."""
    if torch.compiler.is_compiling():
        return grad_out.clone(memory_format=torch.contiguous_format)
    return grad_out


def _view(buf: torch.Tensor, *shape: int) -> torch.Tensor:
    """The first ``prod(shape)`` elements of the flat ``buf`` as a contiguous ``shape``."""
    return buf[:math.prod(shape)].view(shape)


def _assemble(rows: torch.Tensor, by_row: torch.Tensor, blk: Block,
              buf: Optional[torch.Tensor]) -> torch.Tensor:
    """``W[p] = rows @ cells[:, p, :]`` for the block's rows: ``[rows, B * M, ci]``."""
    part = by_row[blk[0]:blk[1]]
    left = rows.expand(part.shape[0], -1, -1)
    if buf is None:
        return torch.bmm(left, part)
    return torch.bmm(left, part, out=buf[:part.shape[0]])


def forward(x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor,
            bias: Optional[torch.Tensor], geo: KWGeometry, blocks: Sequence[Block],
            pixel_major: bool) -> torch.Tensor:
    """``[B, Cout, Ho, Wo]``: every sample's im2col columns times its own kernels, in row
    ``blocks``, pixel-major (per sample ``cols^T @ W^T``, one copy puts the output back
    channel-major) or channel-major (``W @ cols``): the same products, equal up to float
    rounding."""
    batch = x.shape[0]
    cols, out_hw = im2col(x, geo)
    rows, by_row = mixture_rows(alpha, geo), _cells_by_row(cells)
    pixels = cols.shape[-1]
    out = cols.new_empty((batch, pixels, geo.out_channels) if pixel_major else
                         (batch, geo.out_channels, pixels))
    buf = None if len(blocks) == 1 else cols.new_empty(
        blocks[0][1] - blocks[0][0], rows.shape[0], geo.cell_in)
    for blk in blocks:
        w = _assemble(rows, by_row, blk, buf)
        for o in range(geo.groups_out):
            if pixel_major:
                product_into(_out_columns(out, geo, blk, o), torch.bmm, cols.transpose(1, 2),
                             _kernels(w, geo, batch, o).transpose(1, 2))
            else:
                product_into(_out_rows(out, geo, blk, o), torch.bmm, _kernels(w, geo, batch, o),
                             cols)
    if pixel_major:
        out = out.transpose(1, 2).contiguous()
    if bias is not None:
        out += bias.view(1, -1, 1)
    return out.view(batch, geo.out_channels, *out_hw)


def scratch_plan(largest: int, num_rows: int, num_cells: int, cell_in: int, need_x: bool,
                 need_cells: bool) -> Tuple[int, int]:
    """Elements of the backward's block scratch, and the cell rows per warehouse-gradient
    product.

    The scratch holds a block's kernels (``largest`` cell rows of ``num_rows`` mixtures) for
    the column gradient, then the block's warehouse gradient (``num_cells`` per cell row). A
    warehouse with more cells than the batch has mixtures (KW 4x, or batch 1) would need a
    larger scratch than the kernels: its gradient is computed a chunk of cell rows at a time
    instead, so the scratch never outgrows the kernels' buffer (a larger one raised the peak
    training memory of KW 4x ResNet50 from 1147 to 1271 MB).
    """
    kernels = largest * num_rows if need_x else 0
    chunk = max(1, min(largest, largest * num_rows // num_cells))
    return max(kernels, chunk * num_cells if need_cells else 0) * cell_in, chunk


class KWIm2colFunction(torch.autograd.Function):
    """:func:`forward` with a backward that walks the same blocks (not twice differentiable).

    Inputs ``(x, alpha, cells, bias, plan, geo)`` (a :class:`~kw_mm.cnn.plan.LayerPlan` and the
    calling layer's geometry).
    """

    @staticmethod
    def forward(ctx, x, alpha, cells, bias, plan, geo):
        ctx.geo, ctx.blocks = geo, plan.blocks
        ctx.save_for_backward(x, alpha, cells)
        return forward(x, alpha, cells, bias, geo, plan.blocks,
                       plan.order == 'pixel-major')

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        grad_out = incoming_grad(grad_out)
        x, alpha, cells = ctx.saved_tensors
        geo, blocks = ctx.geo, ctx.blocks
        need_x, need_alpha, need_cells, need_bias = ctx.needs_input_grad[:4]
        batch = x.shape[0]
        cols, out_hw = im2col(x, geo)  # recomputed: cheaper than keeping it
        rows, by_row = mixture_rows(alpha, geo), _cells_by_row(cells)
        grad = grad_out.reshape(batch, geo.out_channels, -1)
        # written by the first product, accumulated by the others (no zero fill)
        grad_cols = cols.new_empty(cols.shape) if need_x else None
        first = True
        grad_rows = rows.new_zeros(rows.shape) if need_alpha else None
        grad_cells = cells.new_empty(cells.shape) if need_cells else None
        # One buffer per kind of block, reused by every block, and no zero fill of grad_cols:
        # fresh blocks come from the allocator page-faulted and the fill is one more pass over
        # memory (`tools/analysis/benchmark.py --layer-profile` shows the backward's share).
        # ``scratch`` holds a block's kernels until the column gradient has used them, then
        # its warehouse gradient: that product is written into the contiguous scratch and
        # copied into place, because written straight into the strided ``[n, co, ci]`` view it
        # went through torch's per-matrix fallback, slower than the product plus the copy.
        # Handing the gradient back transposed instead cost more:
        # autograd copies it into the warehouse's layout.
        largest = max(p1 - p0 for p0, p1 in blocks)
        num_rows, num_cells = rows.shape[0], cells.shape[0]
        scratch_size, chunk = scratch_plan(largest, num_rows, num_cells, geo.cell_in, need_x,
                                           need_cells)
        scratch = cols.new_empty(scratch_size) if scratch_size else None
        gw_buf = cols.new_empty(largest, num_rows, geo.cell_in) \
            if need_alpha or need_cells else None
        for blk in blocks:
            size = blk[1] - blk[0]
            w = _assemble(rows, by_row, blk, _view(scratch, size, num_rows, geo.cell_in)) \
                if need_x else None
            gw = gw_buf[:size] if gw_buf is not None else None
            for o in range(geo.groups_out):
                g = _out_rows(grad, geo, blk, o)
                if need_x:
                    w_t = _kernels(w, geo, batch, o).transpose(1, 2)
                    if first:
                        torch.bmm(w_t, g, out=grad_cols)
                        first = False
                    else:
                        grad_cols.baddbmm_(w_t, g)
                if gw is not None:
                    product_into(_kernels(gw, geo, batch, o), torch.bmm, g, cols.transpose(1, 2))
            if need_alpha:
                # sum over the block's rows p of W-grad[p] @ cells[:, p, :]^T
                grad_rows += torch.bmm(gw, by_row[blk[0]:blk[1]].transpose(1, 2)).sum(0)
            if need_cells:
                for c0 in range(0, size, chunk):
                    c1 = min(size, c0 + chunk)
                    part = torch.bmm(rows.t().expand(c1 - c0, -1, -1), gw[c0:c1],
                                     out=_view(scratch, c1 - c0, num_cells, geo.cell_in))
                    _cells_by_row(grad_cells)[blk[0] + c0:blk[0] + c1].copy_(part)
        grad_x = col2im(grad_cols, geo, x.shape, out_hw) if need_x else None
        grad_alpha = _rows_to_alpha(grad_rows, geo, batch) if need_alpha else None
        grad_bias = grad.sum(dim=(0, 2)) if need_bias else None
        return grad_x, grad_alpha, grad_cells, grad_bias, None, None
