"""Parameters and FLOPs of a kw_mm model, KW kernel assembly and attention included.

For classification configs the whole classifier is counted; for detection configs the
backbone and neck (``extract_feat``; the heads depend on proposals). What is counted for each KW
layer is documented in ``kw_mm/analysis/flops.py``. One FLOP = one multiply-add, one image.

Example:
    python tools/analysis/get_flops.py configs/demo/kw1x-resnet18_demo-cls.py --shape 224
"""
import argparse
from collections import OrderedDict

import torch.nn as nn
from mmengine.config import Config, DictAction

from kw_mm.analysis.flops import count_params_and_flops, format_count
from kw_mm.apis import build_model, register_toolbox


class FeatureExtractor(nn.Module):
    """``model.extract_feat`` as a module, for detectors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.extract_feat(x)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Parameters and FLOPs of a kw_mm model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=[224, 224],
                        help='input size: H (square) or H W (default: 224 224)')
    parser.add_argument('--per-layer', action='store_true', help='print every KW layer')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if len(args.shape) not in (1, 2) or min(args.shape) < 1:
        raise ValueError(f'--shape takes H or H W (positive), got {args.shape}')
    shape = (3, args.shape[0], args.shape[-1])
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = register_toolbox(cfg)
    model = build_model(cfg)
    target = FeatureExtractor(model) if scope == 'mmdet' else model
    stats = count_params_and_flops(target, shape)

    counted = 'backbone + neck' if scope == 'mmdet' else 'whole classifier'
    print(f'config: {args.config}\ninput: {shape} ({counted})')
    print(f"params: {format_count(stats['params'])} ({stats['params']:,})  "
          f"warehouse cells {format_count(stats['params_warehouses'])}, "
          f"KW attentions {format_count(stats['params_attention'])}, "
          f"other {format_count(stats['params_other'])}")
    print(f"FLOPs:  {format_count(stats['flops'])} ({stats['flops']:,})")
    for label, key in (('KW conv', 'flops_kw_conv'), ('KW assembly', 'flops_kw_assembly'),
                       ('KW attention', 'flops_kw_attention'), ('other', 'flops_other')):
        print(f'  {label:<13}{format_count(stats[key]):>8} ({stats[key]:,})')
    per_wh = OrderedDict()
    for row in stats['kw_layers']:
        acc = per_wh.setdefault(row['warehouse'], dict(layers=0, attention=0, assembly=0,
                                                       conv=0, n=row['num_cells']))
        acc['layers'] += 1
        for key in ('attention', 'assembly', 'conv'):
            acc[key] += row[key]
    if per_wh:
        print(f"{'warehouse':<24}{'layers':>7}{'n':>6}{'conv':>10}{'assembly':>10}"
              f"{'attention':>11}")
        for name, acc in per_wh.items():
            print(f"{name:<24}{acc['layers']:>7}{acc['n']:>6}{format_count(acc['conv']):>10}"
                  f"{format_count(acc['assembly']):>10}{format_count(acc['attention']):>11}")
    if args.per_layer:
        for row in stats['kw_layers']:
            print(f"  {row['name']:<40} M={row['num_mixtures']:<5} n={row['num_cells']:<5} "
                  f"conv {format_count(row['conv'])}, assembly {format_count(row['assembly'])}, "
                  f"attention {format_count(row['attention'])}")


if __name__ == '__main__':
    main()
