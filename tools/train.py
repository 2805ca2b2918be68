"""Train a kw_mm model: mmpretrain and mmdet configs alike (the toolbox is the config's
``default_scope``).

Examples:
    python tools/train.py configs/demo/kw1x-resnet18_demo-cls.py --work-dir work_dirs/demo_cls
    python tools/train.py CONFIG --resume                      # resume the latest checkpoint
    python tools/train.py CONFIG --cfg-options data_root=/data/imagenet
    bash tools/dist_train.sh CONFIG 8                          # 8 processes (GPUs, or CPUs+gloo)
"""
import argparse

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from kw_mm.engine import check_temperature_schedule
from kw_mm.runner.launch import (add_runner_args, apply_runner_args, check_checkpoint_file,
                                check_data_roots, register_toolbox, setup_cpu_distributed,
                                use_safe_checkpoint_loader)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a kw_mm model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or (no value) from the latest one in '
                        'the work directory')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (GPU)')
    parser.add_argument('--no-validate', action='store_true', help='skip validation')
    add_runner_args(parser)
    return parser.parse_args()


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config."""
    apply_runner_args(cfg, args)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
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
