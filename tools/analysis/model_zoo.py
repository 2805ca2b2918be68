"""Build every paper variant and print the model-zoo table (params, m/n, FLOPs at 224).

Example:
    python tools/analysis/model_zoo.py                 # all variants, with FLOPs
    python tools/analysis/model_zoo.py kw1x_resnet50 --no-flops --json zoo.json
    python tools/analysis/model_zoo.py --readme        # the README's table, from the index
"""
import argparse
import json
import time

from kw_mm.analysis.model_zoo import format_table, readme_table, variants, zoo_row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('names', nargs='*', help='paper variant names (default: all)')
    parser.add_argument('--no-flops', action='store_true', help='skip the FLOPs count')
    parser.add_argument('--json', help='also write the rows to this JSON file')
    parser.add_argument('--readme', action='store_true',
                        help="print the README's model-zoo table (from the model index, no "
                        'model is built) and exit')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.readme:
        print(readme_table())
        return
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


if __name__ == '__main__':
    main()
