"""The table of the KW models made by kw_mm.KWBackbone from mmpretrain backbones: parameters,
FLOPs (kernel assembly in brackets), warehouses, and eval / training-step time against the plain
model (median of per-round ratios, every budget of a backbone timed in one interleaved run with
its plain model, kw_mm.analysis.benchmark's side by side), under the header of the machine.

The time ratios hold for the machine they were measured on: measure on a quiet one.

Examples:
    # the whole table (5 backbones x plain, 1/2x, 1x, 4x), 2 threads, batch 8, 224x224, and
    # the section of docs/model_zoo.md rewritten with it
    python tools/analysis/kw_wrapped_zoo.py --write docs/model_zoo.md
    # counts only (no timing), two backbones
    python tools/analysis/kw_wrapped_zoo.py resnet101 efficientnet-b0 --no-speed
    # a quick look at the timing path: one budget, one round, small images
    python tools/analysis/kw_wrapped_zoo.py efficientnet-b0 --budgets 1 --reps 1 --warmup 0 \
        --size 32
"""
import argparse
import json
import os.path as osp
import sys

import torch

from kw_mm.analysis.wrapped_zoo import (WRAPPED_MODELS, ZOO_BUDGETS, find_section,
                                        replace_section, zoo_rows, zoo_section)


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {value}')
    return number


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('models', nargs='*', help=f'backbones (default: all of '
                        f'{list(WRAPPED_MODELS)})')
    parser.add_argument('--budgets', type=float, nargs='+', default=list(ZOO_BUDGETS))
    parser.add_argument('--no-speed', action='store_true', help='counts only, no timing')
    parser.add_argument('--batch', type=positive, default=8)
    parser.add_argument('--size', type=positive, default=224,
                        help='input side of the timing (FLOPs are counted at 224)')
    parser.add_argument('--reps', type=positive, default=5, help='timed rounds per metric')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds first')
    parser.add_argument('--threads', type=positive, default=2)
    parser.add_argument('--write', metavar='DOC',
                        help='replace the section between <!-- wrapped-zoo:start --> and '
                        '<!-- wrapped-zoo:end --> of this markdown file (docs/model_zoo.md) with '
                        'the machine header and the table')
    parser.add_argument('--json', help='also write the rows to this JSON file')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.write:  # before hours of timing: the file and its markers are there
        if not osp.isfile(args.write):
            raise SystemExit(f'--write: no such file {args.write!r}')
        with open(args.write) as f:
            try:
                find_section(f.read(), args.write)
            except ValueError as err:
                raise SystemExit(f'--write: {err}') from None
    torch.set_num_threads(args.threads)
    machine = None
    if not args.no_speed:
        from kw_mm.analysis.machine_report import machine_report
        machine = machine_report(args.threads).header()  # before the timing, as benchmark.py
    rows = zoo_rows(args.models, args.budgets, speed=not args.no_speed, batch=args.batch,
                    size=args.size, reps=args.reps, warmup=args.warmup,
                    log=lambda s: print(s, file=sys.stderr, flush=True))
    section = zoo_section(rows, args.batch, args.size, args.reps, args.threads, machine)
    print(section)
    if args.write:
        with open(args.write) as f:
            text = replace_section(f.read(), section, args.write)
        with open(args.write, 'w') as f:
            f.write(text)
        print(f'section written to {args.write}', file=sys.stderr)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(machine=machine, rows=rows), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
