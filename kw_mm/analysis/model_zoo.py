"""The model-zoo table: every paper variant of the model index built, counted and compared with
the paper."""
from typing import Iterable, List, Optional

import torch
import torch.nn as nn

from kw_mm.apis import Variant, build_model, get_variant, list_ablations, list_variants
from kw_mm.cnn import WarehouseManager
from .flops import count_params, count_params_and_flops


def build_classifier(variant: Variant, num_classes: int = 1000) -> nn.Module:
    """Build ``variant`` (its config's classifier) through the real mmpretrain registry."""
    return build_model(variant.model_cfg(num_classes))


def warehouse_rows(model: nn.Module) -> List[dict]:
    """m, n and cell shape of every warehouse in ``model`` (backbone and head), in order."""
    rows = []
    for module in model.modules():
        if isinstance(module, WarehouseManager):
            rows.extend(module.summary())
    return rows


def zoo_row(variant: Variant, with_flops: bool = True, input_size: int = 224) -> dict:
    """Params, m/n per warehouse and (optionally) FLOPs of one variant."""
    torch.manual_seed(0)
    model = build_classifier(variant).eval()
    row = dict(name=variant.name, family=variant.family, budget=variant.budget,
               budget_label=' '.join(filter(None, (variant.budget_label, variant.setting))),
               params=count_params(model)['params'],
               paper_params_m=variant.paper_params_m, release_params=variant.release_params,
               warehouses=warehouse_rows(model), note=variant.note)
    if with_flops:
        stats = count_params_and_flops(model, (1, 3, input_size, input_size))
        row['flops'] = stats['flops']
    del model
    return row


def format_table(rows: Iterable[dict]) -> str:
    """A markdown table: model, ours vs paper (and release) params, FLOPs, m and n."""
    lines = ['| Model | KW | Params (ours) | Paper | Release | FLOPs @224 | m per warehouse | '
             'n per warehouse |', '|---|---|---|---|---|---|---|---|']
    for r in rows:
        release = f"{r['release_params'] / 1e6:.2f}M" if r['release_params'] else '-'
        flops = f"{r['flops'] / 1e9:.2f}G" if r.get('flops') else '-'
        m = ', '.join(str(w['m']) for w in r['warehouses']) or '-'
        n = ', '.join(str(w['n']) for w in r['warehouses']) or '-'
        lines.append(f"| {r['family']} | {r['budget_label'] or 'baseline'} | "
                     f"{r['params'] / 1e6:.2f}M ({r['params']:,}) | {r['paper_params_m']:.2f}M | "
                     f'{release} | {flops} | {m} | {n} |')
    return '\n'.join(lines)


def variants(names: Optional[Iterable[str]] = None) -> List[Variant]:
    """All paper variants and ablation rows of the model index, or those named."""
    if not names:
        return list_variants() + list_ablations()
    return [get_variant(n) for n in names]
