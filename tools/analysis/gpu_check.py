"""The GPU check: run it first on a new CUDA machine (``make gpu-check``).

(a) every KW layer path and every backbone on the GPU against the CPU oracle (relative error
below 1e-4 in float32), (b) a training step of every KW backbone in float32 and under AMP
(float16 with a gradient scaler, bfloat16), (c) the paper's Table 12 side by side (images per
second at batch 100, 224x224, ResNet50 and MobileNetV2 rows with DY-Conv, ODConv and KW 1/2x,
1x, 4x, ratios to the plain model beside the paper's), (d) the paper's Table 16 memory per GPU
(torch.cuda.max_memory_allocated). One table, headed by the GPU model and the torch and CUDA
versions. The code is in kw_mm/analysis/gpu_check.py.

Examples:
    python tools/analysis/gpu_check.py                       # on the first CUDA device
    python tools/analysis/gpu_check.py --parts ab --markdown gpu_check.md
    python tools/analysis/gpu_check.py --device cpu --quick  # the script itself, tiny shapes
    # (b) also on trained weights: AMP against float32 for a KW model and its plain twin
    python tools/analysis/gpu_check.py --parts b \
        --checkpoint configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py kw1x-mbv2.pth \
        --checkpoint configs/mobilenet-v2_8xb32-150e_in1k.py mbv2.pth

Exit status 1 if a check fails.
"""
import argparse
import os.path as osp
import sys

import torch

from kw_mm.analysis.gpu_check import device_header, format_rows, run_checks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Check kw_mm on a CUDA device')
    parser.add_argument('--device', default='cuda',
                        help='cuda (default), cuda:N, or cpu to test the script on this CPU')
    parser.add_argument('--quick', action='store_true',
                        help='tiny shapes and a few models (minutes on a CPU)')
    parser.add_argument('--parts', default='abcd',
                        help='which parts to run, any of a, b, c, d (default abcd)')
    parser.add_argument('--markdown', help='also write the table as markdown to this file')
    parser.add_argument('--checkpoint', action='append', default=[], nargs=2,
                        metavar=('CONFIG', 'FILE'),
                        help="(b) also a training step of CONFIG's model with the weights of "
                        'FILE (strict load; KW at t = 0); repeatable')
    args = parser.parse_args()
    args.checkpoints = [tuple(pair) for pair in args.checkpoint]
    for config, path in args.checkpoints:
        if not osp.isfile(config) or not osp.isfile(path):
            missing = config if not osp.isfile(config) else path
            parser.error(f'--checkpoint {config} {path}: {missing} is not a file (give a config '
                         'and its checkpoint)')
    if args.checkpoints and 'b' not in args.parts:
        parser.error(f'--checkpoint runs in part b, not in --parts {args.parts!r}')
    if not args.parts or set(args.parts) - set('abcd'):
        parser.error(f'--parts takes letters among a, b, c, d, got {args.parts!r}')
    return args


def main() -> int:
    args = parse_args()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f'gpu_check.py: --device {args.device!r} is not a device; use cuda, cuda:N or '
              'cpu', file=sys.stderr)
        return 2
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('gpu_check.py: no CUDA device here (torch.cuda.is_available() is False, torch '
              f'{torch.__version__}, built for CUDA {torch.version.cuda or "-"}); run it on a '
              'GPU machine, or pass --device cpu to run the check on this CPU',
              file=sys.stderr)
        return 2
    if device.type not in ('cuda', 'cpu'):
        print(f'gpu_check.py: --device {args.device!r}: the check runs on cuda or cpu',
              file=sys.stderr)
        return 2
    rows = run_checks(device, args.quick, args.parts,
                      log=lambda text: print(text, file=sys.stderr, flush=True),
                      checkpoints=args.checkpoints)
    header = f'kw_mm GPU check on {device}: {device_header(device)}' + \
        (' (quick: tiny shapes)' if args.quick else '')
    print(format_rows(rows, header), flush=True)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(format_rows(rows, header, markdown=True) + '\n')
    failed = [r for r in rows if r.ok is False]
    if failed:
        print(f'{len(failed)} of {sum(r.ok is not None for r in rows)} checks failed',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
