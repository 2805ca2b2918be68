"""Train a kw_mm model: mmpretrain and mmdet configs alike (the toolbox is the config's
``default_scope``).

Examples:
    python tools/train.py configs/demo/kw1x-resnet18_demo-cls.py --work-dir work_dirs/demo_cls
    python tools/train.py CONFIG --resume                      # resume the latest checkpoint
    python tools/train.py CONFIG --cfg-options data_root=/data/imagenet
    bash tools/dist_train.sh CONFIG 8                          # 8 processes (GPUs, or CPUs+gloo)
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from kw_mm.engine import check_temperature_schedule
from kw_mm.utils.setup_env import (LAUNCHERS, check_checkpoint_file, check_data_roots,
                                   override_data_root, pop_data_root, register_toolbox,
                                   set_local_rank_env, setup_cpu_distributed,
                                   use_safe_checkpoint_loader)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a kw_mm model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or (no value) from the latest one in '
                        'the work directory')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (GPU)')
    parser.add_argument('--no-validate', action='store_true', help='skip validation')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value; data_root=PATH moves every '
                        'dataset to PATH')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    set_local_rank_env(args.local_rank)
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config."""
    data_root = pop_data_root(args.cfg_options)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if data_root is not None:
        override_data_root(cfg, data_root)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        check_checkpoint_file(args.resume)
        cfg.resume, cfg.load_from = True, args.resume
    return cfg


def main() -> None:
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    register_toolbox(cfg)
    use_safe_checkpoint_loader()
    check_data_roots(cfg, ['train_dataloader', 'val_dataloader'])
    if cfg.get('load_from') and not (cfg.get('resume') and args.resume == 'auto'):
        check_checkpoint_file(cfg.load_from)
    setup_cpu_distributed(cfg, args.launcher)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    check_temperature_schedule(runner)
    runner.train()


if __name__ == '__main__':
    main()
