"""Build every paper variant and print the model-zoo table (params, m/n, FLOPs at 224).

Example:
    python tools/analysis/model_zoo.py                 # all variants, with FLOPs
    python tools/analysis/model_zoo.py kw1x_resnet50 --no-flops --json zoo.json
    python tools/analysis/model_zoo.py --markdown      # the documentation's tables, from the index
    python tools/analysis/model_zoo.py --markdown --check   # the docs hold those tables?
    python tools/analysis/model_zoo.py --markdown --write   # rewrite them in the docs
"""
import argparse
import json
import os.path as osp
import sys
import time

from kw_mm.analysis import zoo_tables
from kw_mm.analysis.model_zoo import format_table, variants, zoo_row

#: The repository, and the documents whose marked tables --markdown writes or checks.
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DOCS = ('README.md', 'docs/model_zoo.md')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('names', nargs='*', help='paper variant names (default: all)')
    parser.add_argument('--no-flops', action='store_true', help='skip the FLOPs count')
    parser.add_argument('--json', help='also write the rows to this JSON file')
    parser.add_argument('--markdown', action='store_true',
                        help='print the documentation\'s model-zoo tables (from the model index, '
                        'no model is built) and exit')
    action = parser.add_mutually_exclusive_group()
    action.add_argument('--check', action='store_true',
                        help='with --markdown: exit 1 naming every marked table of the docs that '
                        'differs from the index')
    action.add_argument('--write', action='store_true',
                        help='with --markdown: rewrite the marked tables of the docs')
    parser.add_argument('--docs', nargs='+', default=list(DOCS), metavar='FILE',
                        help=f'documents for --check / --write (default: {" ".join(DOCS)}, '
                        'relative to the repository)')
    args = parser.parse_args()
    if (args.check or args.write) and not args.markdown:
        parser.error('--check and --write go with --markdown')
    return args


def markdown(args: argparse.Namespace) -> int:
    paths = [p if osp.isabs(p) else osp.join(ROOT, p) for p in args.docs]
    if args.check:
        stale = zoo_tables.stale_tables(paths, ROOT)
        for line in stale:
            print(f'out of date: {osp.relpath(line, ROOT)}', file=sys.stderr)
        if stale:
            print('rewrite them with: python tools/analysis/model_zoo.py --markdown --write',
                  file=sys.stderr)
            return 1
        print(f'model-zoo tables up to date in {", ".join(args.docs)}')
    elif args.write:
        changed = zoo_tables.write_tables(paths, ROOT)
        print('rewrote ' + ', '.join(osp.relpath(p, ROOT) for p in changed) if changed else
              'model-zoo tables already up to date')
    else:
        print(zoo_tables.markdown())
    return 0


def main() -> int:
    args = parse_args()
    if args.markdown:
        return markdown(args)
    rows = []
    selected = variants(args.names)
    for i, variant in enumerate(selected, 1):
        start = time.time()
        rows.append(zoo_row(variant, with_flops=not args.no_flops))
        print(f'[{i}/{len(selected)}] {variant.name}: {rows[-1]["params"]:,} params '
              f'({time.time() - start:.1f}s)', flush=True)
    print('\nKernelWarehouse model zoo (1000-class ImageNet classifiers)\n')
    print(format_table(rows))
    notes = [f"- {r['name']}: {r['note']}" for r in rows if r['note']]
    if notes:
        print('\nNotes:\n' + '\n'.join(notes))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
