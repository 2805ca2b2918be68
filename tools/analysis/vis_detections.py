"""Draw a detector's predictions (boxes, masks, classes) on the first images of its test set.

mmdet's ``DetInferencer`` and ``DetLocalVisualizer`` through kw_mm's config or model name
(:func:`kw_mm.apis.init_detector`: strict weights, KW temperature); the pictures go to
``OUT_DIR/vis/`` and their paths are printed.

Example:
    python tools/analysis/vis_detections.py configs/demo/mask-rcnn_kw-r18_demo-coco.py \\
        $(cat work_dirs/demo_det/last_checkpoint) --out-dir work_dirs/demo_det --num-images 4
"""
import argparse
import os.path as osp

from mmengine.config import DictAction

from kw_mm.apis import init_detector, resolve_config, test_set_images
from kw_mm.runner.launch import (check_checkpoint_file, check_data_roots, override_data_root,
                                pop_data_root)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Pictures of detections on test images')
    parser.add_argument('config', help='config file or kw_mm model name')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', required=True, help='pictures go to OUT_DIR/vis/')
    parser.add_argument('--num-images', type=int, default=4, help='default: 4')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='smallest score drawn (default: 0.3)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value; data_root=PATH moves every '
                        'dataset to PATH')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    check_checkpoint_file(args.checkpoint)
    cfg_options = dict(args.cfg_options or {})
    data_root = pop_data_root(cfg_options)  # data_root=PATH moves every dataset, as in test.py
    cfg = resolve_config(args.config, cfg_options)
    if data_root is not None:
        override_data_root(cfg, data_root)
    check_data_roots(cfg, ['test_dataloader'])
    inferencer = init_detector(cfg, args.checkpoint, device='cpu', show_progress=False)
    images = test_set_images(cfg, args.num_images)
    inferencer(images, out_dir=args.out_dir, pred_score_thr=args.score_thr)
    for image in images:
        print(osp.join(args.out_dir, 'vis', osp.basename(image)))


if __name__ == '__main__':
    main()
