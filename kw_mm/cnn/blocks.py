"""How a layer's kernels are cut into blocks that fit a byte budget (the arithmetic only).

Every fast path assembles and applies the kernels of a layer block by block. A **row block**
``(p0, p1)`` is rows ``p0:p1`` of every cell, i.e. the output channels ``o * co + p``
(``p0 <= p < p1``) of every output group ``o``; one product ``alpha @ cells[:, p0:p1]`` reads
those rows of the warehouse once. An **input block** (the transposed inference path of
:mod:`~kw_mm.cnn.fast_im2col_inference`) is input channels ``q0:q1`` of every cell.

The budgets, the alignment and which kind of block a path uses are decided by the layer's plan
(:func:`kw_mm.cnn.plan.plan_layer`); this module only cuts.
"""
import math
from typing import List, Tuple

from .functional import KWGeometry

#: A block: rows ``p0:p1`` of every cell (or input channels ``q0:q1`` of every cell).
Block = Tuple[int, int]


def row_bytes(geo: KWGeometry, batch: int, itemsize: int) -> int:
    """Kernel bytes of one cell row of every mixture of every sample."""
    return batch * geo.num_mixtures * geo.cell_in * itemsize


def row_blocks(geo: KWGeometry, batch: int, itemsize: int, budget: int, within_budget: bool,
               align: int, strict: bool = False) -> List[Block]:
    """The blocks of cell rows whose kernels take at most about ``budget`` bytes each.

    Args:
        geo (KWGeometry): The layer.
        batch (int): Number of samples.
        itemsize (int): Bytes per kernel element.
        budget (int): Kernel bytes per block.
        within_budget (bool): Whole aligned blocks that stay within the budget (at least one
            alignment), or about equal aligned blocks that may round up past it.
        align (int): Rows per block are a multiple of this (the last block may be shorter).
        strict (bool): With ``within_budget``, blocks of fewer rows than ``align`` where an
            aligned block would not fit (a memory bound rather than a cache fit).
    """
    co = geo.cell_out
    one_row = row_bytes(geo, batch, itemsize)
    if geo.groups > 1 or one_row * co <= budget:
        return [(0, co)]  # small kernels; grouped layers (depth-wise) have small kernels anyway
    rows = max(1, budget // one_row)
    if within_budget:
        aligned = rows // align * align
        rows = aligned if aligned else (rows if strict else align)
    count = math.ceil(co / rows)
    size = math.ceil(co / count)  # about equal blocks ...
    if co >= align and rows >= align:
        size = math.ceil(size / align) * align  # ... of a multiple of ``align`` rows
    return [(p, min(co, p + size)) for p in range(0, co, size)]


def input_block(geo: KWGeometry, batch: int, itemsize: int, budget: int, align: int,
                strict: bool = False) -> int:
    """Input channels per input block: a divisor of the cells' input channels, the largest
    multiple of ``align`` whose kernels (``batch * M * co`` per channel) fit ``budget`` (else
    the smallest such multiple, or with ``strict`` the largest divisor that fits; without
    one, the largest divisor that fits)."""
    ci = geo.cell_in
    fit = max(1, budget // (batch * geo.num_mixtures * geo.cell_out * itemsize))
    divisors = [d for d in range(1, ci + 1) if ci % d == 0]
    aligned = [d for d in divisors if d % align == 0]
    within = [d for d in aligned if d <= fit]
    if within:
        return within[-1]
    if aligned and not strict:
        return aligned[0]
    return [d for d in divisors if d <= fit][-1]
