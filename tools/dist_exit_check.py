"""Run the 2-process demo detector through tools/dist_train.sh N times and count the exits.

A multi-process run whose work succeeded must exit 0 every time: a process that dies at
teardown (gloo's ``terminate called without an active exception``, SIGABRT) fails the whole
torchrun launch after good epochs. This script measures it on the demo detector (Mask R-CNN
with a KW ResNet18 backbone, 8 small COCO-format images, 2 epochs of 2 iterations, gloo on
CPUs); the tests run it once.

Example:
    python tools/dist_exit_check.py --runs 20 --out work_dirs/dist_exit_check

Prints one line per run (its exit code) and ``N/N runs exited 0``; exits 1 if any run
failed, keeping that run's output in ``OUT/run_XX/output.txt``.
"""
import argparse
import os
import os.path as osp
import socket
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_DET = osp.join(REPO, 'configs', 'demo', 'mask-rcnn_kw-r18_demo-coco.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Count clean exits of 2-process demo runs')
    parser.add_argument('--runs', type=int, default=20, help='how many launches (default 20)')
    parser.add_argument('--nproc', type=int, default=2, help='processes per launch')
    parser.add_argument('--out', default='work_dirs/dist_exit_check',
                        help='data, backbone checkpoint and one work dir per run')
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def prepare(out: str) -> dict:
    """The demo COCO set (8 train / 4 val images) and a KW ResNet18 classification checkpoint
    (seeded random weights) for the detector's backbone."""
    import torch
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    import kw_mm  # noqa: F401 - registers the KW backbone
    from kw_mm.demo_data.coco import write_coco_set
    register_all_modules(init_default_scope=False)
    paths = write_coco_set(osp.join(out, 'data'), num_train=8, num_val=4)
    torch.manual_seed(0)
    cls = MODELS.build(dict(type='ImageClassifier',
                            backbone=dict(type='kw_mm.KWResNet', depth=18, budget=1.0),
                            neck=dict(type='GlobalAveragePooling'),
                            head=dict(type='LinearClsHead', num_classes=6, in_channels=512)))
    ckpt = osp.join(out, 'cls.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=cls.state_dict()), ckpt)
    return dict(data_root=paths['data_root'], backbone=ckpt)


def launch(prepared: dict, work_dir: str, nproc: int) -> subprocess.CompletedProcess:
    """One ``tools/dist_train.sh`` run of the demo detector (2 epochs of 2 iterations)."""
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', PORT=str(free_port()))
    cmd = ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), DEMO_DET, str(nproc),
           '--work-dir', work_dir, '--cfg-options', f"data_root={prepared['data_root']}",
           f"model.backbone.init_cfg.checkpoint={prepared['backbone']}",
           'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
           'train_dataloader.batch_size=2', 'default_hooks.logger.interval=1']
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)


def main() -> None:
    args = parse_args()
    if args.runs < 1:
        raise SystemExit(f'--runs must be >= 1, got {args.runs}')
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    prepared = prepare(out)
    clean = 0
    for idx in range(args.runs):
        work_dir = osp.join(out, f'run_{idx:02d}')
        proc = launch(prepared, work_dir, args.nproc)
        os.makedirs(work_dir, exist_ok=True)
        with open(osp.join(work_dir, 'output.txt'), 'w') as f:
            f.write(proc.stdout + '\n---- stderr ----\n' + proc.stderr)
        note = ''
        if proc.returncode == 0:
            clean += 1
        elif 'terminate called' in proc.stderr:
            note = '  (a process aborted at teardown: terminate called ...)'
        print(f'run {idx + 1}/{args.runs}: exit {proc.returncode}{note}', flush=True)
    print(f'{clean}/{args.runs} runs exited 0 ({args.nproc} processes each; outputs in {out})',
          flush=True)
    sys.exit(0 if clean == args.runs else 1)


if __name__ == '__main__':
    main()
