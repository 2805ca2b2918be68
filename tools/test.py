"""Evaluate a checkpoint of a kw_mm model (mmpretrain or mmdet config) and print the metrics.

Examples:
    python tools/test.py configs/demo/kw1x-resnet18_demo-cls.py work_dirs/demo_cls/epoch_6.pth
    python tools/test.py CONFIG CHECKPOINT --cfg-options data_root=/data/imagenet
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import os.path as osp

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from kw_mm.runner.launch import (add_runner_args, apply_runner_args, check_checkpoint_file,
                                check_data_roots, register_toolbox, setup_cpu_distributed,
                                use_safe_checkpoint_loader)
from kw_mm.runner.summary import format_metrics
from kw_mm.runner.visualization import enable_show_dir


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a kw_mm checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--show-dir', help='draw the predictions on every test image into '
                        'this directory')
    add_runner_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    check_checkpoint_file(args.checkpoint)
    cfg = apply_runner_args(Config.fromfile(args.config), args)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir:
        enable_show_dir(cfg, args.show_dir)

    register_toolbox(cfg)
    use_safe_checkpoint_loader()
    check_data_roots(cfg, ['test_dataloader'])
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    metrics = runner.test()
    if is_main_process():
        classes = runner.test_dataloader.dataset.metainfo.get('classes')
        print(format_metrics(metrics, title=f'{osp.basename(args.config)} @ {args.checkpoint}',
                             num_classes=len(classes) if classes else None), flush=True)


if __name__ == '__main__':
    main()
