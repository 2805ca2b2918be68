"""The table of the KW models made by kw_mm.KWBackbone from mmpretrain backbones: parameters,
FLOPs (kernel assembly in brackets), warehouses, and eval / training-step time against the plain
model (median of per-round ratios, every budget of a backbone timed in one interleaved run).

Examples:
    # the whole table (5 backbones x plain, 1/2x, 1x, 4x), 2 threads, batch 8, 224x224
    python tools/analysis/kw_wrapped_zoo.py
    # counts only, two backbones
    python tools/analysis/kw_wrapped_zoo.py resnet101 efficientnet-b0 --no-speed
"""
import argparse
import json
import sys

import torch

from kw_mm.analysis.wrapped_zoo import WRAPPED_MODELS, ZOO_BUDGETS, format_zoo, zoo_rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('models', nargs='*', help=f'backbones (default: all of '
                        f'{list(WRAPPED_MODELS)})')
    parser.add_argument('--budgets', type=float, nargs='+', default=list(ZOO_BUDGETS))
    parser.add_argument('--no-speed', action='store_true', help='counts only, no timing')
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--reps', type=int, default=5, help='timed rounds per metric')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds first')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', help='also write the rows to this JSON file')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = zoo_rows(args.models, args.budgets, speed=not args.no_speed, batch=args.batch,
                    size=args.size, reps=args.reps, warmup=args.warmup,
                    log=lambda s: print(s, file=sys.stderr, flush=True))
    if not args.no_speed:
        from kw_mm.analysis.machine_report import machine_report
        print(machine_report(args.threads).header() + '\n')
    print(format_zoo(rows, args.batch))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
