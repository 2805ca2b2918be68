"""KW convolution for inference on small maps: kernels assembled transposed, by input channels.

On maps under :data:`~kw_mm.cnn.fast_im2col.PIXEL_MAJOR_BELOW` output pixels (ResNet's 7x7
stage) the im2col path's per-sample products ``cols^T @ W^T`` (``[pixels, K] @ [K, rows]``)
dominate a KW layer, and they ran at about half the speed of the plain convolution: the
kernels ``W`` come out of the assembly row-major (``[rows, K]``, see
:mod:`kw_mm.cnn.fast_im2col`), so ``W^T`` is a transposed operand. With ``W^T`` contiguous the
same products ran 1.6x faster (Sapphire Rapids Xeon, 2 threads, KW 1x ResNet18's 512x512x3x3
layers at batch 8: 6.4 against 10 ms), so this path assembles ``W^T`` directly:

* **Transposed cells** ``[n, ci, co]``, kept between forward passes
  (:mod:`kw_mm.cnn.transposed_cells`; inference only, the weights do not change).
* **Blocks of input channels** ``q0:q1`` of every cell (instead of output rows): the product
  ``alpha @ cells_t[:, q0:q1]`` is one matrix product whose output, read for one sample and
  one output group, is the contiguous ``[kh * kw * groups_in * q, co]`` block of ``W^T`` for
  those input channels.
* **Columns in the matching order** ``[B, blocks, pixels, (s, i, q)]``, gathered once per
  layer; the per-sample products of the blocks accumulate into the output
  (``baddbmm``), whose few kilobytes per sample stay in the cache.

Same math as :func:`~kw_mm.cnn.functional.kw_conv_reference` (equal up to float rounding: the
sums over input channels run block by block), checked by ``tests/test_cnn/test_fast.py``. No
backward: a step with gradients runs :class:`~kw_mm.cnn.fast_im2col.KWIm2colFunction`, whose
warehouse changes at every step.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import fast_im2col
from .functional import KWGeometry

#: Cells with fewer input channels (a warehouse shared with depth-wise layers has 1) would make
#: blocks of input channels too thin for the products: the im2col path runs them.
MIN_CELL_IN = 16

#: Smaller batches run the im2col path, which needs no transposed copy of the warehouse: at
#: batch 1 this path did not make KW 1x ResNet18 faster (1.55x its plain twin with it, 1.56x
#: without, Sapphire Rapids Xeon, 2 threads, copies kept between forwards); layer by layer it
#: gains from batch 2, clearly at 4. (An earlier measurement, 1.89x with it, had the copy made
#: again at every forward: the benchmark calls ``eval()`` before each one, which then dropped
#: the copies.)
MIN_BATCH = 4

#: Layers whose warehouse has more cells than the layer has output pixels run the im2col path:
#: the assembly (``n`` cells per kernel cell) then outweighs the products this path speeds up,
#: and the copy would cost memory for nothing (eval batch 8, KW 4x ResNet18, n = 108 on 7x7
#: maps: 2.10x its plain twin with this path and without, copies kept between forwards).
MAX_CELLS_PER_PIXEL = 1.0


def input_blocks_decision(geo: KWGeometry, spatial: Sequence[int], batch: int,
                          num_cells: int) -> Tuple[bool, str]:
    """Whether an im2col layer (:func:`~kw_mm.cnn.fast_im2col.im2col_decision`) runs this
    path in inference, and why: 2-D layers with a kernel larger than 1x1 (point-wise layers
    read their input as columns without a copy, which this layout would add) whose products
    run pixel-major, with cells of at least :data:`MIN_CELL_IN` input channels, batches of at
    least :data:`MIN_BATCH` and at most :data:`MAX_CELLS_PER_PIXEL` warehouse cells
    (``num_cells``) per output pixel."""
    pixels = math.prod(geo.output_size(tuple(spatial)))
    if geo.cell_in < MIN_CELL_IN:
        return False, f'cells of {geo.cell_in} < {MIN_CELL_IN} input channels'
    if geo.is_pointwise:
        return False, 'point-wise: its input is its columns'
    if not fast_im2col.is_pixel_major(pixels):
        return False, f'{pixels} output pixels: channel-major products'
    if batch < MIN_BATCH:
        return False, f'batch {batch} < {MIN_BATCH}: products too short'
    if num_cells > MAX_CELLS_PER_PIXEL * pixels:
        return False, (f'{num_cells} cells > {MAX_CELLS_PER_PIXEL:g} x {pixels} pixels: '
                       'assembly-bound')
    return True, f'{pixels} output pixels: transposed kernels by input-channel blocks'


def uses_input_blocks(geo: KWGeometry, x: torch.Tensor, num_cells: int) -> bool:
    """:func:`input_blocks_decision` for ``x``'s size and a warehouse of ``num_cells`` cells."""
    return input_blocks_decision(geo, tuple(x.shape[2:]), x.shape[0], num_cells)[0]


def im2col_input_blocks(x: torch.Tensor, geo: KWGeometry,
                        block: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pixel-major columns ``[B, ci // block, Ho * Wo, kh * kw * groups_in * block]``: for
    each block of ``block`` cell-input channels, the columns in (spatial position, input
    group, channel) order, one copy."""
    batch = x.shape[0]
    out_hw = geo.output_size(tuple(x.shape[2:]))
    ph, pw = geo.padding
    padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel_size, geo.stride, geo.dilation
    s_b, s_c, s_h, s_w = padded.stride()
    ci, blocks = geo.cell_in, geo.cell_in // block
    # input channel = i * ci + k * block + q (input group i, block k, channel q)
    windows = padded.as_strided(
        (batch, kh, kw, geo.groups_in, blocks, block, *out_hw),
        (s_b, dh * s_h, dw * s_w, ci * s_c, block * s_c, s_c, sh * s_h, sw * s_w),
        padded.storage_offset())
    cols = windows.permute(0, 4, 6, 7, 1, 2, 3, 5)  # [B, blocks, Ho, Wo, kh, kw, gi, q]
    return cols.reshape(batch, blocks, out_hw[0] * out_hw[1], -1), out_hw


def forward(x: torch.Tensor, alpha: torch.Tensor, cells_t: torch.Tensor,
            bias: Optional[torch.Tensor], geo: KWGeometry, block: int) -> torch.Tensor:
    """``[B, Cout, Ho, Wo]`` from the transposed warehouse ``cells_t`` ``[n, ci, co]`` in
    blocks of ``block`` input channels (a divisor of ``geo.cell_in``)."""
    if geo.cell_in % block:
        raise ValueError(f'block must divide the cells\' {geo.cell_in} input channels, '
                         f'got {block}')
    batch, n, co = x.shape[0], cells_t.shape[0], geo.cell_out
    cols, out_hw = im2col_input_blocks(x, geo, block)
    pixels, depth = cols.shape[2], cols.shape[3]
    rows = fast_im2col.mixture_rows(alpha, geo)  # [(b, o, s, i), n]
    # per output group, the sum over blocks of [pixels, depth] @ [depth, co] per sample
    acc = cols.new_empty(geo.groups_out, batch, pixels, co)
    kernels = cols.new_empty(rows.shape[0], block * co)
    for k in range(cols.shape[1]):
        torch.mm(rows, cells_t[:, k * block:(k + 1) * block].reshape(n, block * co),
                 out=kernels)
        w_t = kernels.view(batch, geo.groups_out, depth, co)
        for o in range(geo.groups_out):
            if k == 0:
                torch.bmm(cols[:, 0], w_t[:, o], out=acc[o])
            else:
                acc[o].baddbmm_(cols[:, k], w_t[:, o])
    out = acc.permute(1, 0, 3, 2).reshape(batch, geo.out_channels, pixels)
    if bias is not None:
        out += bias.view(1, -1, 1)
    return out.view(batch, geo.out_channels, *out_hw)
