"""The model-zoo table: every paper variant built, counted and compared with the paper."""
from typing import Iterable, List, Optional

import torch
import torch.nn as nn

from kw_mm.cnn import WarehouseManager
from kw_mm.models.paper_variants import ALL_VARIANTS, PaperVariant


def build_classifier(variant: PaperVariant, num_classes: int = 1000) -> nn.Module:
    """Build ``variant`` as an mmpretrain ImageClassifier through the real registry."""
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS.build(variant.model_cfg(num_classes))


def warehouse_rows(model: nn.Module) -> List[dict]:
    """m, n and cell shape of every warehouse in ``model`` (backbone and head), in order."""
    rows = []
    for module in model.modules():
        if isinstance(module, WarehouseManager):
            rows.extend(module.summary())
    return rows


def zoo_row(variant: PaperVariant, with_flops: bool = True, input_size: int = 224) -> dict:
    """Params, m/n per warehouse and (optionally) FLOPs of one variant."""
    torch.manual_seed(0)
    model = build_classifier(variant).eval()
    params = sum(p.numel() for p in model.parameters())
    row = dict(name=variant.name, family=variant.family, budget=variant.budget, params=params,
               paper_params_m=variant.paper_params_m, release_params=variant.release_params,
               warehouses=warehouse_rows(model), note=variant.note, setting=variant.setting)
    if with_flops:
        from kw_mm.analysis.flops import count_params_and_flops
        stats = count_params_and_flops(model, (1, 3, input_size, input_size))
        row['flops'] = stats['flops']
    del model
    return row


def _budget_label(budget: Optional[float], setting: str = '') -> str:
    if budget is None:
        return 'baseline'
    labels = {0.25: '1/4x', 0.5: '1/2x', 0.75: '3/4x'}
    label = labels.get(budget, f'{budget:g}x')
    return f'{label} {setting}' if setting else label


def format_table(rows: Iterable[dict]) -> str:
    """A markdown table: model, ours vs paper (and release) params, FLOPs, m and n."""
    lines = ['| Model | KW | Params (ours) | Paper | Release | FLOPs @224 | m per warehouse | '
             'n per warehouse |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        release = f"{r['release_params'] / 1e6:.2f}M" if r['release_params'] else '-'
        flops = f"{r['flops'] / 1e9:.2f}G" if r.get('flops') else '-'
        m = ', '.join(str(w['m']) for w in r['warehouses']) or '-'
        n = ', '.join(str(w['n']) for w in r['warehouses']) or '-'
        label = _budget_label(r['budget'], r.get('setting', ''))
        lines.append(f"| {r['family']} | {label} | {r['params'] / 1e6:.2f}M "
                     f"({r['params']:,}) | {r['paper_params_m']:.2f}M | {release} | {flops} | "
                     f'{m} | {n} |')
    return '\n'.join(lines)


def variants(names: Optional[Iterable[str]] = None) -> List[PaperVariant]:
    """All paper variants, or those named."""
    if not names:
        return list(ALL_VARIANTS)
    from kw_mm.models.paper_variants import get_variant
    return [get_variant(n) for n in names]
