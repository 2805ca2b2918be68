"""How one KW layer runs: its path, product order and blocks, decided in one place.

:func:`plan_layer` decides, for a layer's geometry and an input shape, dtype and device, and
whether gradients are needed, which fast path runs the layer (:data:`PATHS`), in which product
order, and in which blocks of kernels (:mod:`kw_mm.cnn.blocks`), from one table of named
thresholds (:class:`Thresholds`, :data:`PATH_RULES`). The router
(:func:`kw_mm.cnn.fast.kw_conv`) executes the plan; ``--explain``
(:mod:`kw_mm.cnn.explain`) prints the same plan; the tests run every path of the table.

The paths (all plain ``torch``, on any device):

* ``'grouped'``: spatial layers, one grouped convolution over the samples per block of kernels
  (:mod:`kw_mm.cnn.fast`);
* ``'pointwise'``: 1x1 dense layers and ``KWLinear``, batched matrix products per block;
* ``'im2col'``: dense layers on small maps, per-sample products over im2col columns, channel-
  or pixel-major (:mod:`kw_mm.cnn.fast_im2col`);
* ``'im2col-transposed'``: the same layers in inference, kernels assembled transposed from a
  kept transposed copy of the warehouse, blocked by input channels
  (:mod:`kw_mm.cnn.fast_im2col_inference`); no backward.

**Budgets.** A block's kernels should stay in the cache on a CPU: there the budget is
``share * L2 per core * threads`` (the share per path in :data:`PATH_RULES`, the L2 size read
from the system once per process, :mod:`kw_mm.cnn.cpu_caches`). On any other device the budget
bounds memory instead: :attr:`Thresholds.device_block_bytes` per block, so that a layer's
per-sample kernels never exist for the whole batch at once.

**Overrides** without patching anything: ``kw_impl`` (a layer argument, or
:func:`kw_mm.cnn.fast.use_kw_impl` for a block of code) set to a path name forces that path on
every layer it applies to; :func:`planning_as` plans as another device type would (for memory
models of a GPU measured on a CPU).

Plans are cached per (geometry, input shape, dtype, device type, gradients, override, budget,
threads): the forward does no Python-side decision work after the first call at a shape, and
``torch.compile`` treats the plan as a constant (:func:`cached_plan`). Explanations are built
only when asked (:meth:`LayerPlan.why`, :meth:`LayerPlan.describe`).
"""
import math
import operator
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import torch

from .blocks import Block, input_block, row_blocks, row_bytes
from .cpu_caches import MachineCaches, format_bytes, machine_caches
from .functional import KWGeometry

# ------------------------------------------------------------------------------ vocabulary
GROUPED = 'grouped'
POINTWISE = 'pointwise'
IM2COL = 'im2col'
IM2COL_TRANSPOSED = 'im2col-transposed'
#: The fast paths, in the order the router considers them.
PATHS = (GROUPED, POINTWISE, IM2COL, IM2COL_TRANSPOSED)
#: Product orders of the im2col paths: per output block ``W @ cols`` (channel-major) or per
#: sample ``cols^T @ W^T`` (pixel-major).
CHANNEL_MAJOR = 'channel-major'
PIXEL_MAJOR = 'pixel-major'
#: What ``kw_impl`` accepts: ``'auto'`` (the plan decides; ``'fast'`` is the same),
#: ``'reference'`` (the straightforward oracle), ``'export'`` (the graph-export formulation)
#: or a path name (that path wherever it applies, the plan elsewhere).
KW_IMPLS = ('auto', 'fast', 'reference', 'export') + PATHS


@dataclass(frozen=True)
class PathRule:
    """What distinguishes a path in planning.

    Attributes:
        orders: The product orders it can run (``None``: it has no choice).
        blocks_by: ``'rows'`` (row blocks) or ``'input channels'`` (input blocks).
        within_budget: Whether a row block must stay within the budget (whole aligned
            blocks) or may round up past it to about equal aligned blocks.
        share: The :class:`Thresholds` field of its CPU budget without gradients.
        share_grad: The same in a step with gradients (``None``: the path has no backward).
    """

    orders: Tuple[Optional[str], ...]
    blocks_by: str
    within_budget: bool
    share: str
    share_grad: Optional[str]

    @property
    def trains(self) -> bool:
        """Whether it has a backward."""
        return self.share_grad is not None


#: The paths' planning rules (their budgets are named thresholds, :class:`Thresholds`).
PATH_RULES: Dict[str, PathRule] = {
    GROUPED: PathRule((None, ), 'rows', False, 'l2_share_grouped', 'l2_share_grouped'),
    POINTWISE: PathRule((None, ), 'rows', False, 'l2_share_grouped', 'l2_share_grouped'),
    IM2COL: PathRule((CHANNEL_MAJOR, PIXEL_MAJOR), 'rows', True, 'l2_share_im2col',
                     'l2_share_im2col_grad'),
    IM2COL_TRANSPOSED: PathRule((PIXEL_MAJOR, ), 'input channels', True, 'l2_share_im2col',
                                None),
}


@dataclass(frozen=True)
class Thresholds:
    """The planning thresholds: ratios of a layer's own sizes (the same on any CPU), the CPU
    budgets as shares of the L2 cache read from the machine, and the memory bound of other
    devices. Each is re-derived by timing the layers on both sides of it, e.g.
    ``tools/analysis/benchmark.py --layer-profile kw1x_resnet18 --threshold min_batch=2``
    against the default (or ``--kw-impl PATH`` to force a path), at 2 threads and batch 8."""

    #: im2col: cells with fewer output rows (MobileNetV2's 8- and 32-row cells) make the
    #: per-block products too small; the grouped / point-wise paths are faster there.
    min_cell_out: int = 64
    #: im2col: used when the output map has at most this many pixels per output channel, i.e.
    #: when the im2col columns (``kh * kw * Cin * pixels``) are no larger than the kernels the
    #: grouped path would copy and reorder (512 channels at 7x7, 256 at 14x14). Point-wise
    #: layers need no columns, but their per-sample products still lose to the batched
    #: point-wise path on larger maps (ResNet50's expanding 1x1 layers at 56x56 and 28x28).
    max_pixels_per_channel: float = 1.0
    #: im2col: output maps with fewer pixels run pixel-major (``cols^T @ W^T`` per sample):
    #: the product kernels then run over the block's rows (a multiple of 16) instead of an odd
    #: pixel count (49 at 7x7); ResNet's 7x7 layers ran 7% faster so.
    pixel_major_below: int = 64
    #: im2col-transposed: cells with fewer input channels (a warehouse shared with depth-wise
    #: layers has 1) would make blocks of input channels too thin for the products.
    min_cell_in: int = 16
    #: im2col-transposed: smaller batches run im2col, which needs no transposed copy: at
    #: batch 1 the transposed path did not make KW 1x ResNet18 faster; layer by layer it gains
    #: from batch 2, clearly at 4.
    min_batch: int = 4
    #: im2col-transposed: warehouses with more cells than the layer has output pixels per
    #: this ratio run im2col: the assembly (``n`` cells per kernel cell) then outweighs the
    #: products this path speeds up (KW 4x ResNet18, n = 108 on 7x7 maps, gained nothing).
    max_cells_per_pixel: float = 1.0
    #: Rows (or input channels) per block are a multiple of this: the convolution's fast
    #: kernels work on channel blocks of 8 or 16 (an odd count, 27 rows, sends it to a path
    #: 10x slower), and the matrix-product kernels on 16 rows.
    row_align: int = 16
    #: CPU budgets, kernel bytes of one block per thread in units of the L2 cache of one core
    #: (``--layer-profile kw1x_resnet18`` and ``kw1x_resnet50`` with the share varied).
    #: Grouped / point-wise paths: a block's kernels, their permuted copy and the convolution
    #: library's reorder pass through the cache one after the other; about one L2 per thread
    #: was fastest (2-5 MB with 2 MB L2).
    l2_share_grouped: float = 1.0
    #: im2col (and im2col-transposed): no copies, so a block may be larger, and its per-block
    #: products have a fixed cost (a parallel region each, which also counts when another
    #: process competes for a core): four L2 per thread were fastest.
    l2_share_im2col: float = 4.0
    #: im2col with gradients: the backward holds a block's kernels and their gradient at once;
    #: larger blocks raised the peak training memory without making the step faster.
    l2_share_im2col_grad: float = 2.0
    #: Kernel bytes per block on devices other than the CPU (no cache to fit, memory to
    #: bound): one layer's per-sample kernels never take more than this, plus the block's
    #: working copies (a permuted copy on the grouped path; the kernel gradient in a
    #: backward). 64 MB keeps KW ResNet50's extra memory at batch 100-512 to a few blocks
    #: (``tools/analysis/memory.py CONFIG --device cuda`` re-derives the network's memory);
    #: its 3x3 layer4 kernels at batch 512 would otherwise take 4.5 GB at once.
    device_block_bytes: int = 64 * 2**20


#: The thresholds the router uses (:func:`using_thresholds` changes them for a block of code).
THRESHOLDS = Thresholds()
_thresholds = threading.local()


def active_thresholds() -> Thresholds:
    """The thresholds plans are made with: :func:`using_thresholds`'s, else
    :data:`THRESHOLDS`."""
    return getattr(_thresholds, 'value', None) or THRESHOLDS


@contextmanager
def using_thresholds(**changes) -> Iterator[Thresholds]:
    """Plan with some thresholds changed while the block runs (to re-derive one by timing
    both sides of it), e.g. ``using_thresholds(min_batch=2)``."""
    unknown = set(changes) - set(Thresholds.__dataclass_fields__)
    if unknown:
        raise ValueError(f'unknown thresholds {sorted(unknown)}; choose from '
                         f'{list(Thresholds.__dataclass_fields__)}')
    previous = getattr(_thresholds, 'value', None)
    _thresholds.value = replace(active_thresholds(), **changes)
    try:
        yield _thresholds.value
    finally:
        _thresholds.value = previous


#: Why a layer takes (or does not take) a path: reason code -> message template, formatted with
#: the plan's numbers only when asked (:meth:`LayerPlan.why`).
REASONS = {
    'groups': 'groups={}: grouped convolution',
    'small-cells': 'cells of {} < {} rows: products too small',
    'not-2d': '{}-D layer: im2col is 2-D only',
    'pointwise-small-map': 'dense point-wise, {} output pixels <= {:g}',
    'pointwise-large-map': 'point-wise, {} output pixels > {:g}: batched point-wise',
    'small-map': '{} output pixels <= {:g} (columns no larger than kernels)',
    'large-map': '{} output pixels > {:g} (columns larger than kernels)',
    'no-copy': 'no transposed copy of the warehouse given',
    'with-grad': 'a step with gradients: no backward on this path',
    'thin-cells': 'cells of {} < {} input channels',
    'pointwise-input': 'point-wise: its input is its columns',
    'channel-major': '{} output pixels: channel-major products',
    'small-batch': 'batch {} < {}: products too short',
    'assembly-bound': '{} cells > {:g} x {} pixels: assembly-bound',
    'transposed': '{} output pixels: transposed kernels by input-channel blocks',
    'forced': 'kw_impl={!r}',
}
#: A reason: its code in :data:`REASONS` and the numbers it is formatted with.
Reason = Tuple[str, Tuple]


# ------------------------------------------------------------------------------ rules
def output_pixels(geo: KWGeometry, spatial: Sequence[int]) -> int:
    return math.prod(geo.output_size(tuple(spatial)))


def im2col_rule(geo: KWGeometry, spatial: Sequence[int],
                th: Optional[Thresholds] = None) -> Tuple[bool, Reason]:
    """Whether the im2col path runs a layer whose input has spatial size ``spatial``: dense
    (``groups == 1``) layers with cells of at least ``min_cell_out`` rows, point-wise (any
    dimension) or 2-D, with at most ``max_pixels_per_channel`` output pixels per output
    channel (``th``: :func:`active_thresholds` if not given)."""
    th = th or active_thresholds()
    if geo.groups != 1:
        return False, ('groups', (geo.groups, ))
    if geo.cell_out < th.min_cell_out:
        return False, ('small-cells', (geo.cell_out, th.min_cell_out))
    if not geo.is_pointwise and geo.dim != 2:
        return False, ('not-2d', (geo.dim, ))
    pixels = output_pixels(geo, spatial)
    limit = th.max_pixels_per_channel * geo.out_channels
    small = pixels <= limit
    if geo.is_pointwise:
        return small, ('pointwise-small-map' if small else 'pointwise-large-map', (pixels, limit))
    return small, ('small-map' if small else 'large-map', (pixels, limit))


def transposed_rule(geo: KWGeometry, spatial: Sequence[int], batch: int,
                    num_cells: Optional[int], needs_grad: bool,
                    th: Optional[Thresholds] = None) -> Tuple[bool, Reason]:
    """Whether an im2col layer runs the transposed inference path instead: no gradients, a
    kept transposed warehouse (``num_cells`` given), 2-D kernels larger than 1x1 (point-wise
    layers read their input as columns without a copy, which this layout would add),
    pixel-major products, cells of at least ``min_cell_in`` input channels, batches of at
    least ``min_batch`` and at most ``max_cells_per_pixel`` warehouse cells per output
    pixel (``th``: :func:`active_thresholds` if not given)."""
    th = th or active_thresholds()
    pixels = output_pixels(geo, spatial)
    if needs_grad:
        return False, ('with-grad', ())
    if num_cells is None:
        return False, ('no-copy', ())
    if geo.cell_in < th.min_cell_in:
        return False, ('thin-cells', (geo.cell_in, th.min_cell_in))
    if geo.is_pointwise:
        return False, ('pointwise-input', ())
    if pixels >= th.pixel_major_below:
        return False, ('channel-major', (pixels, ))
    if batch < th.min_batch:
        return False, ('small-batch', (batch, th.min_batch))
    if num_cells > th.max_cells_per_pixel * pixels:
        return False, ('assembly-bound', (num_cells, th.max_cells_per_pixel, pixels))
    return True, ('transposed', (pixels, ))


def applies(path: str, geo: KWGeometry, needs_grad: bool) -> bool:
    """Whether ``path`` can run a layer of ``geo`` at all (whatever the thresholds say)."""
    if path == GROUPED:
        return True
    if path == POINTWISE:
        return geo.is_pointwise
    if path == IM2COL:
        return geo.groups == 1 and (geo.is_pointwise or geo.dim == 2)
    if path == IM2COL_TRANSPOSED:
        return geo.groups == 1 and geo.dim == 2 and not geo.is_pointwise and not needs_grad
    raise ValueError(f'path must be one of {PATHS}, got {path!r}')


def check_kw_impl(name: str) -> str:
    """``name`` if it is a valid ``kw_impl`` (:data:`KW_IMPLS`); one clear error if not."""
    if name not in KW_IMPLS:
        raise ValueError(f'kw_impl must be one of {KW_IMPLS}, got {name!r}')
    return name


# ------------------------------------------------------------------------------ device
_planning = threading.local()


@contextmanager
def planning_as(device_type: str) -> Iterator[None]:
    """Plan every layer as a device of ``device_type`` would (its budget, its blocks), whatever
    device the tensors are on, while the block runs: a memory model of a GPU measured on the
    CPU. Only the planning changes; the layers still compute on their own device.

    Example:
        >>> with planning_as('cuda'):
        ...     model(images)  # on the CPU, in the blocks a GPU would use
    """
    if not isinstance(device_type, str) or not device_type or ':' in device_type:
        raise ValueError(f"device_type must be a device type such as 'cpu' or 'cuda', got "
                         f'{device_type!r}')
    previous = getattr(_planning, 'device_type', None)
    _planning.device_type = device_type
    try:
        yield
    finally:
        _planning.device_type = previous


def planned_device_type(device: Union[torch.device, str]) -> str:
    """The device type plans are made for: :func:`planning_as`'s, else ``device``'s."""
    forced = getattr(_planning, 'device_type', None)
    return forced or torch.device(device).type


# ------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class LayerPlan:
    """How one KW layer runs at one input size (see the module docstring).

    Attributes:
        path: One of :data:`PATHS`.
        order: The product order (:data:`CHANNEL_MAJOR` / :data:`PIXEL_MAJOR`) of the im2col
            paths, ``None`` for the others.
        blocks: Row blocks ``(p0, p1)`` of every cell, or input blocks ``(q0, q1)`` on
            ``'im2col-transposed'``.
        block_bytes: Kernel bytes of each block.
        budget: Kernel bytes allowed per block.
        budget_source: ``'cpu'`` (from the L2 size), ``'device'``
            (:attr:`Thresholds.device_block_bytes`) or ``'given'``.
        save_kernels: Keep the blocks' kernels for the backward instead of assembling them
            again there (grouped / point-wise paths; costs the memory of all of them).
        route, inference: Why this path; why the transposed inference path is (not) taken.
        geometry, input_shape, itemsize, device_type, needs_grad, num_cells, kw_impl, threads,
        l2_per_core: What the plan was made for.
    """

    path: str
    order: Optional[str]
    blocks: Tuple[Block, ...]
    block_bytes: Tuple[int, ...]
    budget: int
    budget_source: str
    route: Reason
    inference: Reason
    geometry: KWGeometry
    input_shape: Tuple[int, ...]
    itemsize: int
    device_type: str
    needs_grad: bool
    num_cells: Optional[int] = None
    kw_impl: str = 'auto'
    threads: int = 1
    l2_per_core: int = 0
    save_kernels: bool = False
    thresholds: Thresholds = field(default=THRESHOLDS, repr=False)

    @property
    def input_block(self) -> int:
        """Input channels per block (``'im2col-transposed'``)."""
        return self.blocks[0][1] - self.blocks[0][0]

    @property
    def rule(self) -> PathRule:
        return PATH_RULES[self.path]

    @property
    def output_pixels(self) -> int:
        return output_pixels(self.geometry, self.input_shape[2:])

    def why(self) -> str:
        """Why the layer runs this path."""
        code, args = self.route
        text = REASONS[code].format(*args)
        if self.path == IM2COL_TRANSPOSED and code != 'forced':
            code, args = self.inference
            text += '; ' + REASONS[code].format(*args)
        return text

    def budget_rule(self) -> str:
        """Where the budget comes from."""
        if self.budget_source == 'given':
            return 'given'
        if self.budget_source == 'device':
            return f'{self.device_type}: device_block_bytes'
        share = getattr(self.thresholds, self.rule.share_grad if self.needs_grad else
                        self.rule.share)
        return (f'{share:g} x L2 {format_bytes(self.l2_per_core)} x {self.threads} '
                'threads' + ('; grouped layers are one block'
                             if self.geometry.groups > 1 and len(self.blocks) == 1 else ''))

    def describe(self) -> str:
        """One line: path, why, blocks and their bytes against the budget, and the path's own
        sizes (columns, product order)."""
        sizes = sorted({p1 - p0 for p0, p1 in self.blocks})
        unit = 'input channels' if self.rule.blocks_by == 'input channels' else 'cell rows'
        text = (f'{self.path}: {self.why()}; {len(self.blocks)} block(s) of '
                f"{'/'.join(map(str, sizes))} {unit} = "
                f"{'/'.join(format_bytes(s) for s in sorted(set(self.block_bytes)))} of kernels "
                f'(budget {format_bytes(self.budget)} = {self.budget_rule()})')
        if max(self.block_bytes) > self.budget:
            text += ' (over the budget: the smallest block the path allows)'
        if self.path in (IM2COL, IM2COL_TRANSPOSED):
            geo, batch = self.geometry, self.input_shape[0]
            if not geo.is_pointwise:
                columns = (batch * geo.groups_spatial * geo.in_channels * self.output_pixels *
                           self.itemsize)
                text += f'; columns {format_bytes(columns)}'
            text += f'; products {self.order} ({self.output_pixels} output pixels)'
        if self.path == IM2COL and self.inference[0] != 'with-grad':
            code, args = self.inference
            text += f'; not {IM2COL_TRANSPOSED}: {REASONS[code].format(*args)}'
        if self.path == IM2COL_TRANSPOSED and self.num_cells is not None:
            text += '; kernels from the warehouse kept transposed'
        return text


def _budget(rule: PathRule, needs_grad: bool, device_type: str, block_bytes: Optional[int],
            caches: MachineCaches, threads: int, th: Thresholds) -> Tuple[int, str]:
    if block_bytes is not None:
        return int(block_bytes), 'given'
    if device_type != 'cpu':
        return th.device_block_bytes, 'device'
    share = getattr(th, rule.share_grad if needs_grad else rule.share)
    return int(share * caches.l2_per_core * threads), 'cpu'


def plan_layer(geometry: KWGeometry, input_shape: Sequence[int], dtype: torch.dtype,
               device: Union[torch.device, str], needs_grad: bool,
               machine: Optional[MachineCaches] = None, *, kw_impl: str = 'auto',
               num_cells: Optional[int] = None, block_bytes: Optional[int] = None,
               threads: Optional[int] = None,
               thresholds: Optional[Thresholds] = None) -> LayerPlan:
    """The plan of one KW layer: path, product order and blocks.

    Args:
        geometry (KWGeometry): The layer.
        input_shape (sequence[int]): Its input ``[B, Cin, *spatial]``.
        dtype (torch.dtype): The kernels' dtype.
        device (torch.device | str): Where it runs (:func:`planning_as` overrides its type).
        needs_grad (bool): Whether a backward follows.
        machine (MachineCaches, optional): The CPU's caches. Defaults to this machine's
            (:func:`~kw_mm.cnn.cpu_caches.machine_caches`).
        kw_impl (str): ``'auto'`` (or ``'fast'``), or a path name to force where it applies
            (:func:`applies`). Defaults to ``'auto'``.
        num_cells (int, optional): Cells of the layer's warehouse when a transposed copy of it
            is kept (the transposed inference path needs one); ``None``: not considered.
        block_bytes (int, optional): Kernel bytes per block instead of the device's budget.
        threads (int, optional): Threads sharing a block. Defaults to
            ``torch.get_num_threads()``.
        thresholds (Thresholds, optional): Defaults to :func:`active_thresholds`.
    """
    check_kw_impl(kw_impl)
    if kw_impl in ('reference', 'export'):
        raise ValueError(f'kw_impl={kw_impl!r} runs no fast path: nothing to plan')
    geo, th = geometry, thresholds or active_thresholds()
    input_shape = tuple(int(v) for v in input_shape)
    batch, spatial = input_shape[0], input_shape[2:]
    device_type = planned_device_type(device)
    caches = machine or machine_caches()
    threads = threads or torch.get_num_threads()
    itemsize = dtype.itemsize
    im2col, route = im2col_rule(geo, spatial, th)
    transposed, inference = transposed_rule(geo, spatial, batch, num_cells, needs_grad, th)
    if kw_impl in PATHS and applies(kw_impl, geo, needs_grad):
        path, route = kw_impl, ('forced', (kw_impl, ))
    elif im2col:
        path = IM2COL_TRANSPOSED if transposed else IM2COL
    else:
        path = POINTWISE if geo.is_pointwise else GROUPED
    order = None
    if path == IM2COL:
        order = (PIXEL_MAJOR if output_pixels(geo, spatial) < th.pixel_major_below else
                 CHANNEL_MAJOR)
    elif path == IM2COL_TRANSPOSED:
        order = PIXEL_MAJOR
    rule = PATH_RULES[path]
    budget, source = _budget(rule, needs_grad, device_type, block_bytes, caches, threads, th)
    # a device's budget bounds memory: every path keeps within it, below the alignment if it
    # must; the CPU's is a cache fit, which the grouped paths may round up past
    bound = source == 'device'
    if rule.blocks_by == 'input channels':
        size = input_block(geo, batch, itemsize, budget, th.row_align, strict=bound)
        blocks = tuple((q, q + size) for q in range(0, geo.cell_in, size))
        per_channel = batch * geo.num_mixtures * geo.cell_out * itemsize
        sizes = tuple((q1 - q0) * per_channel for q0, q1 in blocks)
    else:
        blocks = tuple(row_blocks(geo, batch, itemsize, budget, rule.within_budget or bound,
                                  th.row_align, strict=bound))
        one_row = row_bytes(geo, batch, itemsize)
        sizes = tuple((p1 - p0) * one_row for p0, p1 in blocks)
    return LayerPlan(path, order, blocks, sizes, budget, source, route, inference, geo,
                     input_shape, itemsize, device_type, needs_grad, num_cells, kw_impl,
                     threads, caches.l2_per_core, False, th)


# ------------------------------------------------------------------------------ the cache
_PLANS: Dict[tuple, LayerPlan] = {}


@torch.compiler.assume_constant_result
def cached_plan(geometry: KWGeometry, input_shape: Tuple[int, ...], dtype: torch.dtype,
                device_type: str, needs_grad: bool, kw_impl: str = 'auto',
                num_cells: Optional[int] = None,
                block_bytes: Optional[int] = None) -> LayerPlan:
    """:func:`plan_layer`, made once per (arguments, :func:`planning_as`, thread count,
    :func:`active_thresholds`).

    ``torch.compile`` calls it while tracing and keeps its result as a constant (a plan is
    made for static shapes: a new input shape is traced again). ``input_shape`` must hold
    Python ints (``operator.index`` of a traced size specializes it).
    """
    # (the defaults' thresholds key as None: no hash of the table on every call)
    key = (geometry, input_shape, dtype, getattr(_planning, 'device_type', None) or device_type,
           needs_grad, kw_impl, num_cells, block_bytes, torch.get_num_threads(),
           getattr(_thresholds, 'value', None))
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = plan_layer(geometry, input_shape, dtype, device_type, needs_grad,
                                        kw_impl=kw_impl, num_cells=num_cells,
                                        block_bytes=block_bytes)
    return plan


def static_shape(x: torch.Tensor) -> Tuple[int, ...]:
    """``x.shape`` as Python ints (specialized under ``torch.compile``)."""
    return tuple(operator.index(s) for s in x.shape)


def clear_plans() -> None:
    """Forget every cached plan (they are kept for the life of the process, one per layer
    shape and setting)."""
    _PLANS.clear()
