"""Evaluate a checkpoint of a kw_mm model (mmpretrain or mmdet config) and print the metrics.

Examples:
    python tools/test.py configs/demo/kw1x-resnet18_demo-cls.py work_dirs/demo_cls/epoch_6.pth
    python tools/test.py CONFIG CHECKPOINT --cfg-options data_root=/data/imagenet
    python tools/test.py CONFIG CHECKPOINT --out predictions.pkl
    python tools/test.py CONFIG CHECKPOINT --compile            # the model torch.compile'd
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
    bash tools/slurm_test.sh PARTITION JOB CONFIG CHECKPOINT

The temperature follows the checkpoint: a Runner checkpoint stores the config of the run that
saved it, and its temperature schedule replaces the one of CONFIG when they differ (one line
says so).
"""
import argparse
import os.path as osp

from mmengine.config import Config

from kw_mm.engine import follow_checkpoint_schedule
from kw_mm.runner.compile import compile_test_step
from kw_mm.runner.config_checks import check_hook_args
from kw_mm.runner.data_check import name_bad_images
from kw_mm.runner.launch import (add_dump_results, add_runner_args, apply_runner_args,
                                 check_checkpoint_file, check_data_roots, close_distributed,
                                 register_toolbox, setup_cpu_distributed,
                                 use_safe_checkpoint_loader)
from kw_mm.runner.output import build_runner, is_first_process, run_header, say
from kw_mm.runner.summary import format_metrics
from kw_mm.runner.visualization import enable_show_dir
from kw_mm.utils.checkpoint import load_file


def build_parser() -> argparse.ArgumentParser:
    """The command line (a function so that other options can be added to it)."""
    parser = argparse.ArgumentParser(description='Evaluate a kw_mm checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--skip-data-check', action='store_true',
                        help='accepted for old scripts; the test set is not read before the '
                        'run (tools/misc/verify_dataset.py checks every image)')
    parser.add_argument('--show-dir', help='draw the predictions on every test image into '
                        'this directory')
    parser.add_argument('--out', help='also dump every prediction to this pickle file '
                        '(.pkl; mmengine DumpResults, as mmpretrain/mmdet tools/test.py --out)')
    add_runner_args(parser)
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def main() -> None:
    args = parse_args()
    check_checkpoint_file(args.checkpoint)
    cfg = apply_runner_args(Config.fromfile(args.config), args)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.show_dir:
        enable_show_dir(cfg, args.show_dir)
    if args.out:
        add_dump_results(cfg, args.out)
    name_bad_images(cfg, ['test_dataloader'])

    scope = register_toolbox(cfg)
    use_safe_checkpoint_loader()
    if '://' not in args.checkpoint:
        changed = follow_checkpoint_schedule(cfg, load_file(args.checkpoint), args.checkpoint)
        if changed:
            say(changed)
    check_hook_args(cfg, scope)
    check_data_roots(cfg, ['test_dataloader'])
    succeeded = False
    try:
        setup_cpu_distributed(cfg, args.launcher)
        say(run_header('test', cfg, args.config))
        runner = build_runner(cfg, args.verbose)
        compile_test_step(runner)
        metrics = runner.test()
        if is_first_process():
            classes = runner.test_dataloader.dataset.metainfo.get('classes')
            print(format_metrics(metrics, title=f'{osp.basename(args.config)} @ '
                                 f'{args.checkpoint}',
                                 num_classes=len(classes) if classes else None), flush=True)
        succeeded = True
    finally:
        close_distributed(succeeded)


if __name__ == '__main__':
    main()
