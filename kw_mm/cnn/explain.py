"""Why a KW layer runs the path and blocks it runs: the layer's plan, printed.

:func:`~kw_mm.cnn.fast.kw_conv` runs the plan :func:`~kw_mm.cnn.plan.plan_layer` makes;
:func:`explain_layer` asks for the same plan and :meth:`~kw_mm.cnn.plan.LayerPlan.describe`
says why, so a user on another CPU (or planning for another device,
:func:`~kw_mm.cnn.plan.planning_as`) sees which path, product order and blocks were chosen,
against which budget (``tools/analysis/benchmark.py --explain``).
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .cpu_caches import format_bytes, machine_caches
from .fast import get_kw_impl
from .functional import KWGeometry
from .plan import PATH_RULES, LayerPlan, active_thresholds, plan_layer, planned_device_type

#: One explained layer: its name, its plan in inference and in a step with gradients.
LayerExplanation = Tuple[str, LayerPlan, LayerPlan]


def explain_layer(geo: KWGeometry, input_shape: Sequence[int],
                  dtype: torch.dtype = torch.float32,
                  device: Union[torch.device, str] = 'cpu',
                  block_bytes: Optional[int] = None, num_cells: Optional[int] = None,
                  needs_grad: bool = False, kw_impl: str = 'auto') -> LayerPlan:
    """The plan :func:`~kw_mm.cnn.fast.kw_conv` runs for an input of ``input_shape``
    (``[B, Cin, *spatial]``).

    Args:
        geo (KWGeometry): The layer.
        input_shape (sequence[int]): Its input's shape.
        dtype (torch.dtype): The kernels' dtype. Defaults to float32.
        device (torch.device | str): Where it runs. Defaults to the CPU.
        block_bytes (int, optional): A budget to use instead of the device's.
        num_cells (int, optional): Cells of the layer's warehouse when a transposed copy is
            kept (KW layers keep one in inference); without it the transposed inference path
            is not considered.
        needs_grad (bool): Plan a step with gradients. Defaults to False.
        kw_impl (str): As the layer's ``kw_impl``. Defaults to ``'auto'``.
    """
    return plan_layer(geo, input_shape, dtype, device, needs_grad, kw_impl=kw_impl,
                      num_cells=num_cells, block_bytes=block_bytes)


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


def explain_model(model: nn.Module, inputs: torch.Tensor) -> List[LayerExplanation]:
    """The plans of every KW layer of ``model`` at the input sizes of one forward pass with
    ``inputs`` (no gradients): in inference (with the warehouse kept transposed, as KW layers
    keep it) and in a training step."""
    with torch.no_grad():
        layer_inputs = record_kw_inputs(model, lambda: model(inputs))
    modules = dict(model.named_modules())
    explained = []
    for name, x in layer_inputs.items():
        layer = modules[name]
        cells = layer.cells
        impl = get_kw_impl(layer)
        impl = 'auto' if impl in ('reference', 'export') else impl
        explained.append((name, explain_layer(layer.geometry, x.shape, cells.dtype, x.device,
                                              num_cells=cells.shape[0], kw_impl=impl),
                          explain_layer(layer.geometry, x.shape, cells.dtype, x.device,
                                        needs_grad=True, kw_impl=impl)))
    return explained


def _blocks_text(plan: LayerPlan) -> str:
    rows = sorted({p1 - p0 for p0, p1 in plan.blocks})
    return (f"{plan.path}, {len(plan.blocks)} block(s) of {'/'.join(map(str, rows))} "
            f'(budget {format_bytes(plan.budget)} = {plan.budget_rule()})')


def explanation_line(name: str, inference: LayerPlan, training: LayerPlan) -> str:
    """``name [input]: <inference plan>; with gradients: <path, blocks, budget>``."""
    return (f"{name} [{'x'.join(map(str, inference.input_shape))}]: {inference.describe()}; "
            f'with gradients: {_blocks_text(training)}')


def format_explanation(explained: Sequence[LayerExplanation],
                       device: Union[torch.device, str] = 'cpu') -> str:
    """The machine's caches, the routing rules and budgets, then one line per layer."""
    caches, th = machine_caches(), active_thresholds()
    device_type = planned_device_type(device)
    shares = []
    for path, rule in PATH_RULES.items():
        text = f'{path} {getattr(th, rule.share):g}'
        if rule.trains and rule.share_grad != rule.share:
            text += f' ({getattr(th, rule.share_grad):g} with gradients)'
        shares.append(text)
    shares = ', '.join(shares)
    lines = [f'CPU: {caches.cpu}; caches: {caches.describe()} (from {caches.source}); '
             f'{torch.get_num_threads()} threads',
             f'routing: im2col for dense layers with cells of >= {th.min_cell_out} rows, '
             f'point-wise or 2-D with <= {th.max_pixels_per_channel:g} output pixel per output '
             f'channel (pixel-major products under {th.pixel_major_below} output pixels); in '
             f'inference im2col-transposed where cells have >= {th.min_cell_in} input '
             f'channels, the batch >= {th.min_batch} and <= {th.max_cells_per_pixel:g} cells '
             'per output pixel; else grouped (spatial) / pointwise',
             f'budgets: planned for {device_type}; kernel bytes per block on the CPU = share x '
             f'L2 per core x threads ({shares}); on other devices '
             f'{format_bytes(th.device_block_bytes)} (device_block_bytes)']
    lines += [explanation_line(*item) for item in explained]
    return '\n'.join(lines)
