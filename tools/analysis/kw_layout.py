"""The warehouse layout of a KW model: every warehouse with its layers, cell shape, m, n and
parameters, before any training.

For a ``kw_mm.KWBackbone`` the plan of the paper's rules is printed with the reason of every
decision (its resolution stage, a reassignment to the previous stage, why a layer stays static);
for the hand-built KW backbones (and KW heads) their warehouses and layers.

Examples:
    python tools/analysis/kw_layout.py configs/kw1x-resnext50-32x4d_8xb512-300e_in1k.py
    python tools/analysis/kw_layout.py configs/kw1x-resnet18_8xb32_in1k.py
    python tools/analysis/kw_layout.py CONFIG --cfg-options model.backbone.budget=4
"""
import argparse
import sys

from mmengine.config import Config, DictAction

from kw_mm.analysis.layout import format_layout
from kw_mm.apis import build_model, register_toolbox


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('configs', nargs='+', metavar='CONFIG', help='config file(s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for config in args.configs:
        cfg = Config.fromfile(config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        register_toolbox(cfg)
        print(f'config: {config}')
        print(format_layout(build_model(cfg)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
