"""How the fast paths cut a layer's kernels into cache-sized blocks of cell rows.

Both fast paths (:mod:`kw_mm.cnn.fast`'s grouped / batched products and
:mod:`kw_mm.cnn.fast_im2col`) assemble and apply the kernels of a layer block by block: a block
is rows ``p0:p1`` of every cell, i.e. the output channels ``o * co + p`` (``p0 <= p < p1``) of
every output group ``o``; one product ``alpha @ cells[:, p0:p1]`` reads those rows of the
warehouse once. :func:`plan_blocks` is the one planner; each path has its own byte budget.
"""
import math
from typing import Dict, List, Optional, Tuple

import torch

from .functional import KWGeometry

#: Per fast path, the largest size of the kernels of one block on the CPU (bytes). Blocks of
#: 2-5 MB were fastest for the grouped convolutions of the ResNet layers, 8 MB for the im2col
#: products of the 256- and 512-channel layers, on the 2-core test machines (shared 32 MB
#: last-level cache).
BLOCK_BYTES: Dict[str, int] = {'grouped': 4 * 2**20, 'im2col': 8 * 2**20}
#: Per fast path, whether a block must stay within the budget (whole aligned blocks, at least
#: one alignment) or may round up past it to about equal aligned blocks.
WITHIN_BUDGET: Dict[str, bool] = {'grouped': False, 'im2col': True}
#: Rows per block are a multiple of this: the convolution's fast kernels work on channel
#: blocks of 8 or 16, an odd count (27 rows) sends it to a path 10x slower, and the
#: matrix-product kernels work on 16 rows.
ROW_ALIGN = 16

#: A block: rows ``p0:p1`` of every cell.
Block = Tuple[int, int]


def plan_blocks(geo: KWGeometry, batch: int, itemsize: int, device: torch.device,
                block_bytes: Optional[int] = None, path: str = 'grouped') -> List[Block]:
    """The blocks of cell rows a layer is assembled and applied in.

    Args:
        geo (KWGeometry): The layer.
        batch (int): Number of samples.
        itemsize (int): Bytes per kernel element.
        device (torch.device): Only the CPU is blocked (by default).
        block_bytes (int, optional): Kernel bytes per block. Defaults to the path's
            :data:`BLOCK_BYTES` on the CPU, no blocking elsewhere.
        path (str): The fast path, ``'grouped'`` or ``'im2col'``. Defaults to ``'grouped'``.
    """
    if path not in BLOCK_BYTES:
        raise ValueError(f'path must be one of {sorted(BLOCK_BYTES)}, got {path!r}')
    co = geo.cell_out
    if block_bytes is None:
        if device.type != 'cpu':
            return [(0, co)]
        block_bytes = BLOCK_BYTES[path]
    # bytes of one row of every cell of every mixture of every sample
    row_bytes = batch * geo.num_mixtures * geo.cell_in * itemsize
    if geo.groups > 1 or row_bytes * co <= block_bytes:
        return [(0, co)]  # small kernels; grouped layers (depth-wise) have small kernels anyway
    rows = max(1, block_bytes // row_bytes)
    if WITHIN_BUDGET[path]:
        rows = max(ROW_ALIGN, rows // ROW_ALIGN * ROW_ALIGN)
    count = math.ceil(co / rows)
    size = math.ceil(co / count)  # about equal blocks ...
    if co >= ROW_ALIGN:
        size = math.ceil(size / ROW_ALIGN) * ROW_ALIGN  # ... of a multiple of ROW_ALIGN rows
    return [(p, min(co, p + size)) for p in range(0, co, size)]
