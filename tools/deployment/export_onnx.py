"""Export a kw_mm model to ONNX with a symbolic batch size and check it with onnxruntime.

mmpretrain configs export the classifier (or, with ``--part backbone``, the backbone); mmdet
configs export the backbone and neck (the FPN levels). The graph takes the normalized image
batch; the KW layers are exported in their export formulation (``kw_mm/cnn/export.py``). The
file is then run with onnxruntime at batch 1 and 3 (the static batch size without
``--dynamic-batch``) against the PyTorch model and the relative errors are printed.

A dynamic-batch file runs each spatial KW layer as a ``Scan`` of per-sample convolutions; a
static-batch file (``--batch N``, default 1) as one grouped convolution over the ``N`` samples,
which onnxruntime runs about as fast at that batch size.

Examples:
    python tools/deployment/export_onnx.py configs/kw1x-resnet18_8xb32_in1k.py \\
        checkpoints/kw1x-resnet18_in1k.pth kw1x-resnet18.onnx --dynamic-batch
    python tools/deployment/export_onnx.py configs/mask-rcnn_kw-r50_1x_coco.py \\
        work_dirs/mask-rcnn_kw-r50_1x_coco/epoch_12.pth kw-r50-fpn.onnx --dynamic-batch \
        --shape 800 1344
    python tools/deployment/export_onnx.py configs/kw1x-resnet18_8xb32_in1k.py \\
        checkpoints/kw1x-resnet18_in1k.pth kw1x-resnet18_b8.onnx --batch 8
"""
import argparse

from mmengine.config import DictAction

from kw_mm.apis import init_model
from kw_mm.deployment import ExportTarget, check_onnx, export_onnx, onnx_batch_dims
from kw_mm.deployment.onnx_export import PARTS, describe_size, image_shape
from kw_mm.runner.launch import check_checkpoint_file

#: The largest relative error accepted by the check (float32 rounding of a deep network).
TOLERANCE = 1e-4


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Export a kw_mm model to ONNX')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (loaded strictly)')
    parser.add_argument('out', help='the .onnx file to write')
    parser.add_argument('--dynamic-batch', action='store_true',
                        help='a symbolic batch dimension (default: the static --batch)')
    parser.add_argument('--batch', type=int,
                        help='the batch size of a static-batch file (default 1); not with '
                        '--dynamic-batch')
    parser.add_argument('--shape', type=int, nargs='+', default=[224],
                        help='input size H (square) or H W (default: 224)')
    parser.add_argument('--part', choices=sorted({p for ps in PARTS.values() for p in ps}),
                        help='what to export (default: the classifier of an mmpretrain config, '
                        'backbone+neck of an mmdet config)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    parser.add_argument('--no-check', action='store_true',
                        help='do not run the file with onnxruntime')
    parser.add_argument('--no-optimize', action='store_true',
                        help="skip torch.onnx's graph optimizer (most of the export time of a "
                        'deep network; the file computes the same, with more nodes)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.batch is not None and (args.dynamic_batch or args.batch < 1):
        raise SystemExit(f'--batch is the positive batch size of a static-batch file, got '
                         f'--batch {args.batch}' + (' with --dynamic-batch' if args.dynamic_batch
                                                    else ''))
    batch = args.batch or 1
    shape = image_shape(args.shape)
    check_checkpoint_file(args.checkpoint)
    model, t = init_model(args.config, args.checkpoint, cfg_options=args.cfg_options)
    scope = model.cfg.default_scope
    target = ExportTarget(model, scope, args.part)
    preprocessor = model.cfg.get('data_preprocessor') or model.cfg.model.get(
        'data_preprocessor') or {}
    metadata = dict(config=args.config, checkpoint=args.checkpoint, part=target.part,
                    kw_temperature=t, input_shape=f'[batch, {", ".join(map(str, shape))}]',
                    mean=preprocessor.get('mean'), std=preprocessor.get('std'))
    print(f'config {args.config}, {target.part}, input [batch, {", ".join(map(str, shape))}], '
          f't = {t:g}')
    export_onnx(target, args.out, shape, args.dynamic_batch, metadata, batch=batch,
                optimize=not args.no_optimize)
    print(f'wrote {args.out} ({describe_size(args.out)}), batch dimension '
          f'{onnx_batch_dims(args.out)[0]!r}')
    if args.no_check:
        return
    errors = check_onnx(args.out, target, shape, (1, 3) if args.dynamic_batch else (batch, ))
    for batch, error in errors.items():
        print(f'onnxruntime vs PyTorch, batch {batch}: max relative error {error:.2e}')
    worst = max(errors.values())
    if worst >= TOLERANCE:
        raise SystemExit(f'{args.out} differs from the PyTorch model (relative error '
                         f'{worst:.2e} >= {TOLERANCE:g})')


if __name__ == '__main__':
    main()
