"""Why a KW layer runs the fast path and the blocks it runs: the planner's decisions, printed.

:func:`~kw_mm.cnn.fast.kw_conv` routes a layer with
:func:`~kw_mm.cnn.fast_im2col.im2col_decision` and blocks it with
:func:`~kw_mm.cnn.blocks.plan_blocks`, whose budget comes from the cache sizes of the machine.
:func:`explain_layer` calls the same functions and keeps the numbers they decided on, so a user
on another CPU sees which path and blocks were chosen and why (``tools/analysis/benchmark.py
--explain``).
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from . import fast_im2col, fast_im2col_inference
from .blocks import BLOCK_L2_SHARE, Block, block_budget, plan_blocks, plan_input_block
from .functional import KWGeometry
from .machine import format_bytes, machine_caches

#: The fast paths, as :func:`explain_layer` names them (``'im2col-transposed'``: the inference
#: path of small maps, :mod:`~kw_mm.cnn.fast_im2col_inference`).
PATHS = ('im2col', 'im2col-transposed', 'grouped', 'pointwise')


@dataclass
class LayerPlan:
    """What the fast path does with one KW layer at one input size."""

    path: str  # one of PATHS
    route: str  # why that path
    input_shape: Tuple[int, ...]
    blocks: List[Block]
    row_bytes: int  # kernel bytes of one cell row of every mixture and sample
    budget: Optional[int]  # kernel bytes per block allowed (None: not blocked, off the CPU)
    budget_rule: str  # where the budget comes from
    extra: dict = field(default_factory=dict)  # per-path sizes (im2col columns)
    #: Where inference (no gradients) differs: 'im2col-transposed' and its input-channel
    #: blocks; else the path and blocks above.
    inference_path: Optional[str] = None
    inference_blocks: Optional[int] = None

    def __post_init__(self) -> None:
        if self.inference_path is None:
            self.inference_path, self.inference_blocks = self.path, len(self.blocks)

    @property
    def block_bytes(self) -> List[int]:
        return [(p1 - p0) * self.row_bytes for p0, p1 in self.blocks]

    def describe(self) -> str:
        rows = sorted({p1 - p0 for p0, p1 in self.blocks})
        sizes = sorted(set(self.block_bytes))
        text = (f'{self.path}: {self.route}; {len(self.blocks)} block(s) of '
                f"{'/'.join(map(str, rows))} cell rows = "
                f"{'/'.join(format_bytes(s) for s in sizes)} of kernels")
        if self.budget is not None:
            text += f' (budget {format_bytes(self.budget)} = {self.budget_rule})'
        else:
            text += f' ({self.budget_rule})'
        for key, value in self.extra.items():
            text += f'; {key} {value}'
        return text


def explain_layer(geo: KWGeometry, input_shape: Sequence[int], itemsize: int = 4,
                  device: torch.device = torch.device('cpu'),
                  block_bytes: Optional[int] = None,
                  num_cells: Optional[int] = None) -> LayerPlan:
    """The path and blocks :func:`~kw_mm.cnn.fast.kw_conv` picks for an input of
    ``input_shape`` (``[B, Cin, *spatial]``), and the numbers behind them.

    Args:
        geo (KWGeometry): The layer.
        input_shape (sequence[int]): Its input's shape.
        itemsize (int): Bytes per element (4 for float32). Defaults to 4.
        device (torch.device): Only the CPU is blocked. Defaults to the CPU.
        block_bytes (int, optional): A budget to use instead of the machine's.
        num_cells (int, optional): Cells of the layer's warehouse, which decide the inference
            path of small maps; without it that path is not considered.
    """
    input_shape = tuple(int(v) for v in input_shape)
    batch, spatial = input_shape[0], input_shape[2:]
    im2col, route = fast_im2col.im2col_decision(geo, spatial)
    path = 'im2col' if im2col else ('pointwise' if geo.is_pointwise else 'grouped')
    planner_path = 'im2col' if im2col else 'grouped'
    device = torch.device(device)
    blocks = plan_blocks(geo, batch, itemsize, device, block_bytes, path=planner_path)
    row_bytes = batch * geo.num_mixtures * geo.cell_in * itemsize
    budget, caches = block_bytes, machine_caches()
    if block_bytes is not None:
        rule = 'given'
    elif device.type != 'cpu':
        rule = f'{device.type}: one block'
    else:
        threads = torch.get_num_threads()
        budget = block_budget(planner_path, threads)
        rule = (f'{BLOCK_L2_SHARE[planner_path]:g} x L2 {format_bytes(caches.l2_per_core)}'
                f' x {threads} threads')
    if geo.groups > 1 and len(blocks) == 1 and budget is not None:
        rule += '; grouped layers are one block'
    extra, inference = {}, (None, None)
    if path == 'im2col':
        pixels = math.prod(geo.output_size(spatial))
        if not geo.is_pointwise:
            cols = batch * geo.groups_spatial * geo.in_channels * pixels * itemsize
            extra['columns'] = format_bytes(cols)
        extra['products'] = ('pixel-major' if fast_im2col.is_pixel_major(pixels) else
                             'channel-major') + f' ({pixels} output pixels)'
        transposed, why = (False, 'warehouse size not given') if num_cells is None else \
            fast_im2col_inference.input_blocks_decision(geo, spatial, batch, num_cells)
        if transposed:
            block = plan_input_block(geo, batch, itemsize, device, block_bytes)
            inference = ('im2col-transposed', geo.cell_in // block)
            block_size = batch * geo.num_mixtures * geo.cell_out * block * itemsize
            extra['inference'] = (f'{why}: {inference[1]} block(s) of {block} input channels = '
                                  f'{format_bytes(block_size)} of kernels, from the warehouse '
                                  'kept transposed')
        else:
            extra['inference'] = f'same path ({why})'
        if block_bytes is None and device.type == 'cpu':
            train = plan_blocks(geo, batch, itemsize, device, None, path='im2col-train')
            extra['with gradients'] = (
                f'{len(train)} block(s) (budget {format_bytes(block_budget("im2col-train"))} = '
                f"{BLOCK_L2_SHARE['im2col-train']:g} x L2 x threads)")
    return LayerPlan(path, route, input_shape, blocks, row_bytes, budget, rule, extra,
                     *inference)


def record_kw_inputs(model: nn.Module, run: Callable[[], object]) -> Dict[str, torch.Tensor]:
    """A copy of the input of every KW layer of ``model`` (first call) while ``run()`` runs."""
    from .kw_conv import KWConvNd  # kw_conv imports the fast paths, which do not import this
    captured: Dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module, args) -> None:
            if name not in captured:  # a copy: later in-place ops may change the input
                captured[name] = args[0].detach().clone()
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in model.named_modules()
             if isinstance(m, KWConvNd)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return captured


def explain_model(model: nn.Module, inputs: torch.Tensor) -> List[Tuple[str, LayerPlan]]:
    """:func:`explain_layer` for every KW layer of ``model`` at the input sizes of one forward
    pass with ``inputs`` (no gradients)."""
    with torch.no_grad():
        layer_inputs = record_kw_inputs(model, lambda: model(inputs))
    modules = dict(model.named_modules())
    return [(name, explain_layer(modules[name].geometry, x.shape, x.element_size(), x.device,
                                 num_cells=modules[name].cells.shape[0]))
            for name, x in layer_inputs.items()]


def format_explanation(plans: Sequence[Tuple[str, LayerPlan]]) -> str:
    """The machine's caches, then one line per layer: name, input, and the plan."""
    caches = machine_caches()
    lines = [f'CPU: {caches.cpu}; caches: {caches.describe()} (from {caches.source}); '
             f'{torch.get_num_threads()} threads',
             f'routing: im2col for dense layers with cells of >= {fast_im2col.MIN_CELL_OUT} '
             f'rows, point-wise or 2-D with <= {fast_im2col.MAX_PIXELS_PER_CHANNEL:g} output '
             'pixel per output channel; else grouped (spatial) / batched point-wise']
    for name, plan in plans:
        lines.append(f"{name} [{'x'.join(map(str, plan.input_shape))}]: {plan.describe()}")
    return '\n'.join(lines)
