"""Evaluate a checkpoint of a kw_mm model (mmpretrain or mmdet config) and print the metrics.

Examples:
    python tools/test.py configs/demo/kw1x-resnet18_demo-cls.py work_dirs/demo_cls/epoch_6.pth
    python tools/test.py CONFIG CHECKPOINT --cfg-options data_root=/data/imagenet
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.dist import is_main_process
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from kw_mm.utils.setup_env import (LAUNCHERS, check_checkpoint_file, check_data_roots,
                                   override_data_root, pop_data_root, register_toolbox,
                                   set_local_rank_env, setup_cpu_distributed,
                                   use_safe_checkpoint_loader)
from kw_mm.utils.summary import format_metrics


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a kw_mm checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='directory for the evaluation logs')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value; data_root=PATH moves every '
                        'dataset to PATH')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    set_local_rank_env(args.local_rank)
    return args


def main() -> None:
    args = parse_args()
    check_checkpoint_file(args.checkpoint)
    cfg = Config.fromfile(args.config)
    data_root = pop_data_root(args.cfg_options)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if data_root is not None:
        override_data_root(cfg, data_root)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False

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
