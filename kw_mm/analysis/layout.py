"""The warehouse layout of any KW model as text (``tools/analysis/kw_layout.py``)."""
import math
from collections import OrderedDict
from typing import List

import torch.nn as nn

from kw_mm.cnn import KWAttention, KWConvNd, WarehouseManager


def _managers(model: nn.Module) -> List[tuple]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WarehouseManager)]


def format_manager(model: nn.Module, prefix: str, manager: WarehouseManager) -> str:
    """Every warehouse of ``manager``: cell shape, m, n, parameters (cells and attentions) and
    its layers in allocation order."""
    members = OrderedDict((spec.name, []) for spec in manager.specs)
    attention = dict.fromkeys(members, 0)
    for name, m in model.named_modules():
        if isinstance(m, KWConvNd) and m.owner is manager:
            members[m.warehouse_name].append((name, m))
            if isinstance(m.attention, KWAttention):
                attention[m.warehouse_name] += sum(p.numel() for p in m.attention.parameters())
    lines = []
    for spec in manager.specs:
        cells = spec.num_cells * math.prod(spec.cell_shape)
        lines.append(f'{prefix}{spec.name}: cell {list(spec.cell_shape)}, m={spec.num_mixtures}, '
                     f'n={spec.num_cells}, b={spec.cell_num_ratio:g}, {cells:,} cell + '
                     f'{attention[spec.name]:,} attention parameters, '
                     f'{len(members[spec.name])} layers')
        for name, m in members[spec.name]:
            shape = list(m.weight_shape)
            lines.append(f'  {name:<40} {shape}  M={m.attention.num_mixtures}')
    return '\n'.join(lines)


def format_layout(model: nn.Module) -> str:
    """The layout of every warehouse manager in ``model``: the rules' plan (with reasons) for a
    ``KWBackbone``, the warehouses and layers otherwise; then the parameter total."""
    blocks = []
    for name, manager in _managers(model):
        owner_name = name.rpartition('.')[0]
        owner = model.get_submodule(owner_name) if owner_name else model
        title = f'[{owner_name or "model"}] {type(owner).__name__}'
        if getattr(owner, 'kw_plan', None) is not None:
            blocks.append(f'{title}: {owner.variant_name()}\n' + owner.format_plan())
        else:
            blocks.append(f'{title}: {len(manager.specs)} warehouses\n'
                          + format_manager(model, '', manager))
    if not blocks:
        blocks.append(f'{type(model).__name__} has no KW layer')
    total = sum(p.numel() for p in model.parameters())
    blocks.append(f'parameters: {total:,}')
    return '\n'.join(blocks)
