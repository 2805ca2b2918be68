"""KW convolution for inference on small maps: kernels assembled transposed, by input channels.

On maps of few output pixels (ResNet's 7x7 stage, where the layer's plan,
:func:`kw_mm.cnn.plan.transposed_rule`, sends a layer in inference) the im2col path's
per-sample products ``cols^T @ W^T`` (``[pixels, K] @ [K, rows]``)
dominate a KW layer, and they ran at about half the speed of the plain convolution: the
kernels ``W`` come out of the assembly row-major (``[rows, K]``, see
:mod:`kw_mm.cnn.fast_im2col`), so ``W^T`` is a transposed operand. With ``W^T`` contiguous the
same products run markedly faster (`tools/analysis/benchmark.py --layer-profile` on the 7x7
layers of KW 1x ResNet18, with `--kw-impl im2col` against the default), so this path assembles
``W^T`` directly:

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
from typing import Optional, Tuple

import torch

from . import fast_im2col
from .functional import KWGeometry


def im2col_input_blocks(x: torch.Tensor, geo: KWGeometry,
                        block: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pixel-major columns ``[B, ci // block, Ho * Wo, kh * kw * groups_in * block]``: for
    each block of ``block`` cell-input channels, the columns in (spatial position, input
    group, channel) order, one copy."""
    batch = x.shape[0]
    out_hw = geo.output_size(tuple(x.shape[2:]))
    windows = fast_im2col.kernel_windows(x, geo)  # [B, C, Ho, Wo, kh, kw]
    # input channel = i * ci + k * block + q (input group i, block k, channel q)
    blocks = geo.cell_in // block
    windows = windows.unflatten(1, (geo.groups_in, blocks, block))
    cols = windows.permute(0, 2, 4, 5, 6, 7, 1, 3)  # [B, blocks, Ho, Wo, kh, kw, gi, q]
    return fast_im2col.gathered(cols).view(batch, blocks, out_hw[0] * out_hw[1], -1), out_hw


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
