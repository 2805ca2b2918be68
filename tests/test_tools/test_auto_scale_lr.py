"""tools/train.py --auto-scale-lr with one and with two processes: the lr in the run header is
the one the optimizer uses; a config without auto_scale_lr is refused in one line."""
import sys

import pytest

from tests.helpers.tool_runs import check, free_port, run, scalars


@pytest.fixture(scope='module')
def scaled_cfg(tiny):
    """The tiny run (batch 2 per process, lr 2e-3 for a total batch of 8, constant lr), one
    epoch."""
    path = tiny['tmp'] / 'tiny_scaled.py'
    path.write_text(f"_base_ = {tiny['cfg']!r}\nauto_scale_lr = dict(base_batch_size=8)\n"
                    'train_cfg = dict(max_epochs=1, val_interval=1)\n')
    return str(path)


def _first_lr(work_dir) -> float:
    rows = [r for r in scalars(work_dir) if 'lr' in r]
    assert rows, f'no lr logged in {work_dir}'
    return rows[0]['lr']


@pytest.mark.slow
def test_one_process(scaled_cfg, tmp_path):
    proc = check(run([sys.executable, 'tools/train.py', scaled_cfg, '--work-dir',
                      str(tmp_path), '--auto-scale-lr']))
    assert 'lr 0.0005 (--auto-scale-lr: 0.002 x 2/8; total batch 2 = 1 process x 2 per ' \
           'process; auto_scale_lr.base_batch_size 8)' in proc.stdout
    assert _first_lr(tmp_path) == pytest.approx(5e-4)


@pytest.mark.slow
def test_two_processes_with_accumulation(scaled_cfg, tmp_path):
    proc = check(run(['bash', 'tools/dist_train.sh', scaled_cfg, '2', '--work-dir',
                      str(tmp_path), '--auto-scale-lr', '--cfg-options',
                      'optim_wrapper.accumulative_counts=2'], PORT=str(free_port())))
    assert 'lr 0.002 (--auto-scale-lr: 0.002 x 8/8; total batch 8 = 2 processes x 2 per ' \
           'process x 2 accumulated; auto_scale_lr.base_batch_size 8)' in proc.stdout
    assert _first_lr(tmp_path) == pytest.approx(2e-3)


@pytest.mark.slow
def test_config_without_auto_scale_lr(tiny, tmp_path):
    proc = run([sys.executable, 'tools/train.py', tiny['cfg'], '--work-dir', str(tmp_path),
                '--auto-scale-lr'])
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert f"--auto-scale-lr: {tiny['cfg']} has no auto_scale_lr.base_batch_size" in last
    assert 'Epoch(train)' not in proc.stdout + proc.stderr
