"""How the fast paths cut a layer's kernels into cache-sized blocks of cell rows.

Both fast paths (:mod:`kw_mm.cnn.fast`'s grouped / batched products and
:mod:`kw_mm.cnn.fast_im2col`) assemble and apply the kernels of a layer block by block: a block
is rows ``p0:p1`` of every cell, i.e. the output channels ``o * co + p`` (``p0 <= p < p1``) of
every output group ``o``; one product ``alpha @ cells[:, p0:p1]`` reads those rows of the
warehouse once. :func:`plan_blocks` is the one planner; each path has its own byte budget.

The budgets come from the machine, not from constants tuned on one CPU: a block's kernels are
shared by the threads that assemble and apply them, so a path's budget is
``share * L2 per core * threads`` with the L2 size read from the system
(:func:`~kw_mm.cnn.machine.machine_caches`, once per process; never stored in a checkpoint).
The shares (:data:`BLOCK_L2_SHARE`) are what measured best on a Sapphire Rapids Xeon (2 MB L2
per core, 2 threads): grouped blocks of 2-5 MB (share 1: 4 MB), im2col blocks of 16 MB (share 4).
On an AMD EPYC Zen 4 (1 MB L2 per core) the same rule gives 2 MB and 8 MB.
:func:`kw_mm.cnn.explain.explain_layer` prints the numbers a layer's plan came from.
"""
import math
from typing import Dict, List, Optional, Tuple

import torch

from .functional import KWGeometry
from .machine import MachineCaches, machine_caches

#: Per fast path, the kernel bytes of one block per thread, in units of the L2 cache of one
#: core. Grouped path: a block's kernels, their permuted copy and the convolution library's
#: reorder pass through the cache one after the other; blocks of about one L2 per thread were
#: fastest (2-5 MB at 2 threads with 2 MB L2). im2col path: no copies, so a block may be
#: larger; its per-block products have a fixed cost (a parallel region each, which also
#: counts when another process competes for a core) and run faster on more rows: four L2 per
#: thread were fastest, measured quietly layer by layer on KW 1x ResNet18 and ResNet50
#: (2026-12-02: the im2col layers of ResNet18 took 100 ms at 8 MB blocks, 93-95 ms at
#: 12-32 MB; ResNet50's 372 ms and 352-362 ms).
#: A training step (``'im2col-train'``) keeps two L2 per thread (8 MB there): its backward
#: holds a block's kernels and their gradient at once, and larger blocks raised the peak
#: training memory (KW 1x ResNet18 259 -> 281 MB) without making the step faster.
BLOCK_L2_SHARE: Dict[str, float] = {'grouped': 1.0, 'im2col': 4.0, 'im2col-train': 2.0}
#: Per fast path, whether a block must stay within the budget (whole aligned blocks, at least
#: one alignment) or may round up past it to about equal aligned blocks.
WITHIN_BUDGET: Dict[str, bool] = {'grouped': False, 'im2col': True, 'im2col-train': True}
#: Rows per block are a multiple of this: the convolution's fast kernels work on channel
#: blocks of 8 or 16, an odd count (27 rows) sends it to a path 10x slower, and the
#: matrix-product kernels work on 16 rows.
ROW_ALIGN = 16

#: A block: rows ``p0:p1`` of every cell.
Block = Tuple[int, int]


def block_budget(path: str, threads: Optional[int] = None,
                 caches: Optional[MachineCaches] = None) -> int:
    """The kernel bytes of one block of ``path`` on this machine's CPU.

    Args:
        path (str): A key of :data:`BLOCK_L2_SHARE`.
        threads (int, optional): Threads sharing a block. Defaults to
            ``torch.get_num_threads()``.
        caches (MachineCaches, optional): Defaults to this machine's
            (:func:`~kw_mm.cnn.machine.machine_caches`).
    """
    if path not in BLOCK_L2_SHARE:
        raise ValueError(f'path must be one of {sorted(BLOCK_L2_SHARE)}, got {path!r}')
    caches = caches or machine_caches()
    threads = threads or torch.get_num_threads()
    return int(BLOCK_L2_SHARE[path] * caches.l2_per_core * threads)


def plan_blocks(geo: KWGeometry, batch: int, itemsize: int, device: torch.device,
                block_bytes: Optional[int] = None, path: str = 'grouped') -> List[Block]:
    """The blocks of cell rows a layer is assembled and applied in.

    Args:
        geo (KWGeometry): The layer.
        batch (int): Number of samples.
        itemsize (int): Bytes per kernel element.
        device (torch.device): Only the CPU is blocked (by default).
        block_bytes (int, optional): Kernel bytes per block. Defaults to the path's
            :func:`block_budget` on the CPU, no blocking elsewhere.
        path (str): The fast path, a key of :data:`BLOCK_L2_SHARE` (``'im2col-train'``: the
            im2col path of a step with gradients). Defaults to ``'grouped'``.
    """
    if path not in BLOCK_L2_SHARE:
        raise ValueError(f'path must be one of {sorted(BLOCK_L2_SHARE)}, got {path!r}')
    co = geo.cell_out
    if block_bytes is None:
        if device.type != 'cpu':
            return [(0, co)]
        block_bytes = block_budget(path)
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


def plan_input_block(geo: KWGeometry, batch: int, itemsize: int, device: torch.device,
                     block_bytes: Optional[int] = None) -> int:
    """Input channels per block of the inference path that assembles kernels transposed
    (:mod:`~kw_mm.cnn.fast_im2col_inference`): a divisor of the cells' input channels, the
    largest multiple of :data:`ROW_ALIGN` whose kernels (``batch * M * co`` per channel) fit
    the ``'im2col'`` budget (else the smallest such multiple; without one, the largest
    divisor that fits).

    Args:
        geo (KWGeometry): The layer.
        batch (int): Number of samples.
        itemsize (int): Bytes per kernel element.
        device (torch.device): Only the CPU is blocked (by default).
        block_bytes (int, optional): Kernel bytes per block. Defaults to the
            ``'im2col'`` :func:`block_budget` on the CPU, no blocking elsewhere.
    """
    ci = geo.cell_in
    if block_bytes is None:
        if device.type != 'cpu':
            return ci
        block_bytes = block_budget('im2col')
    fit = max(1, block_bytes // (batch * geo.num_mixtures * geo.cell_out * itemsize))
    divisors = [d for d in range(1, ci + 1) if ci % d == 0]
    aligned = [d for d in divisors if d % ROW_ALIGN == 0]
    if aligned:
        within = [d for d in aligned if d <= fit]
        return within[-1] if within else aligned[0]
    return [d for d in divisors if d <= fit][-1]
