"""Train a kw_mm model: mmpretrain and mmdet configs alike (the toolbox is the config's
``default_scope``).

Examples:
    python tools/train.py configs/demo/kw1x-resnet18_demo-cls.py --work-dir work_dirs/demo_cls
    python tools/train.py CONFIG --resume                      # resume the latest checkpoint
    python tools/train.py CONFIG --cfg-options data_root=/data/imagenet
    python tools/train.py CONFIG --compile                     # torch.compile (compile=True)
    bash tools/dist_train.sh CONFIG 8 --auto-scale-lr          # 8 processes (GPUs, or CPUs+gloo)
    bash tools/slurm_train.sh PARTITION JOB CONFIG WORK_DIR    # a slurm cluster

Before anything is built the tool checks the overrides (``--cfg-options``), the hooks'
arguments, the temperature anneal against ``max_epochs`` and the work dir (existing checkpoints
need ``--resume`` or ``--overwrite``). It does not read the data set before training: an
unreadable image is named (path and dataset index) when the loader meets it, and
``tools/misc/verify_dataset.py`` checks every image once per new copy of a data set.
``--auto-scale-lr`` scales the lr to the run's total batch (processes x per-process batch x
gradient accumulation); the header line gives the lr used. Checkpoints carry the random states,
so a resumed run continues bit for bit.
"""
import argparse

from mmengine.config import Config

from kw_mm.engine import check_temperature_schedule, pretrained_checkpoint_temperature
from kw_mm.engine.hooks.kw_temperature_hook import temperature_hook_cfg_in, unfinished_anneal
from kw_mm.runner.config_checks import check_hook_args
from kw_mm.runner.data_check import name_bad_images
from kw_mm.runner.launch import (add_runner_args, apply_runner_args, check_checkpoint_file,
                                 check_data_roots, close_distributed, register_toolbox,
                                 setup_cpu_distributed, use_safe_checkpoint_loader)
from kw_mm.runner.output import (build_runner, last_validation_metrics, run_header, say,
                                 temperature_summary)
from kw_mm.runner.scale_lr import apply_auto_scale_lr, launched_processes, lr_summary
from kw_mm.runner.summary import format_metrics
from kw_mm.runner.work_dir import check_work_dir
from kw_mm.utils.checkpoint import load_file

RANDOM_STATE_HOOK = 'kw_mm.RandomStateHook'


def build_parser() -> argparse.ArgumentParser:
    """The command line (a function so that other options can be added to it)."""
    parser = argparse.ArgumentParser(description='Train a kw_mm model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or (no value) from the latest one in '
                        'the work directory')
    parser.add_argument('--allow-fresh', action='store_true',
                        help='with --resume: start from scratch if there is nothing to resume')
    parser.add_argument('--overwrite', action='store_true',
                        help='train from scratch into a work dir that already holds '
                        'checkpoints (they are replaced)')
    parser.add_argument('--allow-unfinished-anneal', action='store_true',
                        help='train even if the temperature anneal ends after max_epochs (the '
                        'model is then trained, and saved, at t > 0)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr from auto_scale_lr.base_batch_size to the total '
                        'batch (processes x per-process batch x accumulative_counts)')
    parser.add_argument('--skip-data-check', action='store_true',
                        help='accepted for old scripts; training does not read the data set '
                        'before it starts (tools/misc/verify_dataset.py does)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (mmengine AmpOptimWrapper; bfloat16 on a '
                        'CPU)')
    parser.add_argument('--no-validate', action='store_true', help='skip validation')
    add_runner_args(parser)
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config."""
    apply_runner_args(cfg, args)
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.amp:
        # mmengine's AmpOptimWrapper on a GPU, bfloat16 without a loss scaler on a CPU
        cfg.optim_wrapper.type = 'kw_mm.CPUAmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        check_checkpoint_file(args.resume)
        cfg.resume, cfg.load_from = True, args.resume
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(str(h.get('type', '')).split('.')[-1] == 'RandomStateHook' for h in hooks):
        hooks.append(dict(type=RANDOM_STATE_HOOK))
    temperature_hook = temperature_hook_cfg_in(dict(custom_hooks=hooks))
    if temperature_hook is not None and args.allow_unfinished_anneal:
        temperature_hook['allow_unfinished_anneal'] = True
    cfg.custom_hooks = hooks
    name_bad_images(cfg, ['train_dataloader', 'val_dataloader'])
    return cfg


def learning_rate(cfg: Config, args: argparse.Namespace) -> str:
    """Apply ``--auto-scale-lr`` (or the config's ``auto_scale_lr.enable``) and say which lr
    the run uses."""
    processes = launched_processes(args.launcher)
    auto = cfg.get('auto_scale_lr')
    if args.auto_scale_lr or (isinstance(auto, dict) and auto.get('enable')):
        return apply_auto_scale_lr(cfg, processes, args.config)
    return lr_summary(cfg, processes)


def check_anneal(cfg: Config) -> None:
    """Refuse an anneal that cannot end within ``max_epochs`` before anything is built (the
    hook refuses it too, for runs started by other scripts)."""
    hook = temperature_hook_cfg_in(cfg)
    if hook is None or hook.get('allow_unfinished_anneal'):
        return
    problem = unfinished_anneal(float(hook['anneal_epochs']),
                                (cfg.get('train_cfg') or {}).get('max_epochs'))
    if problem:
        raise ValueError(problem)


def _pretrained_files(node) -> list:
    """The checkpoints of the ``Pretrained`` init_cfgs inside a model config."""
    if isinstance(node, dict):
        found = [node['checkpoint']] if node.get('type') == 'Pretrained' and \
            isinstance(node.get('checkpoint'), str) else []
        return found + [f for v in node.values() for f in _pretrained_files(v)]
    if isinstance(node, (list, tuple)):
        return [f for v in node for f in _pretrained_files(v)]
    return []


def report_pretrained_temperatures(cfg: Config) -> None:
    """Say when a fine-tuning starts from a checkpoint saved before its own anneal ended.

    The t of such a checkpoint follows from its stored config (``meta['cfg']``), not from this
    config: fine-tuning at t = 0 (KWFinetuneHook) starts from another model than the one the
    pretraining run validated.
    """
    files = _pretrained_files(cfg.get('model'))
    if cfg.get('load_from') and not cfg.get('resume'):
        files.append(cfg.load_from)
    for path in files:
        if '://' in path:
            continue
        check_checkpoint_file(path)
        t = pretrained_checkpoint_temperature(load_file(path))
        if t:
            say(f'{path} was saved at t = {t:g}, before the anneal of its own run ended (its '
                f'stored config); this run uses {temperature_summary(cfg)}, so it starts from '
                'another model than the one that run validated')


def main() -> None:
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    scope = register_toolbox(cfg)
    check_hook_args(cfg, scope)
    check_anneal(cfg)
    lr_line = learning_rate(cfg, args)
    fresh = check_work_dir(cfg.work_dir, args.resume, args.overwrite, args.allow_fresh)
    if fresh:
        say(fresh)
        cfg.resume = False
    use_safe_checkpoint_loader()
    check_data_roots(cfg, ['train_dataloader', 'val_dataloader'])
    if cfg.get('load_from') and not (cfg.get('resume') and args.resume == 'auto'):
        check_checkpoint_file(cfg.load_from)
    report_pretrained_temperatures(cfg)
    succeeded = False
    try:
        setup_cpu_distributed(cfg, args.launcher)
        say(f"{run_header('train', cfg, args.config)}; {lr_line}")
        runner = build_runner(cfg, args.verbose)
        check_temperature_schedule(runner)
        runner.train()
        metrics = last_validation_metrics(runner)
        if metrics:
            say(format_metrics(metrics, title=f'last validation of {cfg.work_dir}'))
        succeeded = True
    finally:
        close_distributed(succeeded)


if __name__ == '__main__':
    main()
