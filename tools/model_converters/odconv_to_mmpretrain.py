"""Convert an ImageNet checkpoint of the ODConv release (OSVAI/ODConv) for kw_mm / mmpretrain.

The architecture (od_resnet18/50, od_mobilenetv2_100/050) and the kernel number are detected from
the tensors; the result loads strictly into the matching config (or --config's model), e.g. as
the backbone of configs/mask-rcnn_odconv4x-r50_1x_coco.py.

Examples:
    python tools/model_converters/odconv_to_mmpretrain.py od_resnet50_4x.pth \
        checkpoints/odconv4x-resnet50_in1k.pth
"""
import argparse
import sys

from kw_mm.converters.kw_release import WRAPPER_KEYS, OfficialCheckpointError
from kw_mm.converters.odconv_release import convert_odconv_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='ODConv release checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--config', help='mmpretrain config whose model it must fit (default: '
                        'the detected model)')
    parser.add_argument('--key', default='auto', choices=('auto', ) + WRAPPER_KEYS,
                        help='where the weights are in a training checkpoint')
    args = parser.parse_args()
    try:
        result = convert_odconv_checkpoint(args.src, args.dst, args.config, args.key)
    except (OfficialCheckpointError, FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'{args.src}: ODConv {result.num_kernels}x {result.arch} '
          f'({len(result.state_dict)} tensors) -> {args.dst}, fits {result.config}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
