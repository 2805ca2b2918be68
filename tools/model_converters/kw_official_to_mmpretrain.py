"""Convert a checkpoint of the reference KernelWarehouse release for kw_mm / mmpretrain.

The source is a checkpoint of OSVAI/KernelWarehouse (a state dict, or a dict holding one under
'model', 'model_ema' or 'state_dict'); the result is a state-dict-only checkpoint
``{'state_dict': ..., 'meta': {...}}`` that loads strictly into the matching kw_mm config.
Without --variant / --config the variant is detected from the tensors.

Examples:
    python tools/model_converters/kw_official_to_mmpretrain.py kw1x_resnet50.pth \
        checkpoints/kw1x-resnet50_in1k.pth
    python tools/model_converters/kw_official_to_mmpretrain.py kw4x_resnet50.pth out.pth \
        --config configs/kw4x-resnet50_8xb512-300e_in1k.py
    python tools/model_converters/kw_official_to_mmpretrain.py ckpt.pth out.pth --key model_ema
"""
import argparse
import os
import sys

from kw_mm.converters.kw_release import WRAPPER_KEYS, OfficialCheckpointError, convert_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert a reference KernelWarehouse checkpoint for kw_mm / mmpretrain')
    parser.add_argument('src', help='reference checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint')
    target = parser.add_mutually_exclusive_group()
    target.add_argument('--variant', help='paper variant the checkpoint must be, e.g. '
                        'kw1x_resnet50 (default: detected from the tensors)')
    target.add_argument('--config', help='mmpretrain config whose model the checkpoint must '
                        'fit (default: the detected variant)')
    parser.add_argument('--key', default='auto', choices=('auto', ) + WRAPPER_KEYS,
                        help="where the weights are in a training checkpoint (auto: a bare state "
                        "dict, else 'model', 'model_ema', 'state_dict' in that order)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        result = convert_checkpoint(args.src, args.dst, variant=args.variant,
                                    config=args.config, key=args.key)
    except (OfficialCheckpointError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'{args.src}: {result.checkpoint_name} ({len(result.state_dict)} tensors) -> '
          f'{args.dst}, fits {result.target.label}')
    if args.config is None and result.variant is not None:
        for model in result.variant.models:
            config = model.config_path
            shown = os.path.relpath(config)
            print(f'evaluate with: python tools/test.py '
                  f'{config if shown.startswith("..") else shown} {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
