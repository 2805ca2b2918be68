"""A training run killed with SIGKILL and resumed ends bit for bit where the uninterrupted run
ends: same weights, optimizer state and metrics (the demo classification config, with its
random augmentation, ``randomness.seed`` and ``deterministic=True``)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from kw_mm.demo_data.classification import write_classification_set
from kw_mm.engine.hooks.random_state_hook import CHECKPOINT_KEY
from kw_mm.runner.launch import use_safe_checkpoint_loader

from tests.helpers.tool_runs import DEMO_CLS, ROOT, check, run, scalars

EPOCHS = 3
#: The demo config on 6 classes x 4 training images (6 iterations of 4 per epoch), validated
#: and saved after every epoch, deterministic kernels.
OVERRIDES = [f'train_cfg.max_epochs={EPOCHS}', 'train_cfg.val_interval=1',
             'train_dataloader.batch_size=4', 'val_dataloader.batch_size=6',
             'default_hooks.checkpoint.interval=1', 'default_hooks.checkpoint.max_keep_ckpts=5',
             'default_hooks.logger.interval=1', 'randomness.deterministic=True',
             'randomness.seed=0']


def train_cmd(data_root: str, work_dir, *extra):
    return [sys.executable, 'tools/train.py', DEMO_CLS, '--work-dir', str(work_dir),
            '--skip-data-check', *extra, '--cfg-options', f'data_root={data_root}', *OVERRIDES]


def kill_after_first_checkpoint(cmd, work_dir, timeout: float = 600) -> str:
    """Start ``cmd``, SIGKILL it as soon as its first checkpoint is recorded, return that
    checkpoint's name. Fails (no retry) if the run ended before the kill."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    record = work_dir / 'last_checkpoint'
    deadline = time.monotonic() + timeout
    while not record.exists() or not record.read_text().strip():
        assert proc.poll() is None, f'the run ended (exit {proc.returncode}) before its ' \
                                    f'first checkpoint:\n{proc.stderr.read()[-3000:]}'
        assert time.monotonic() < deadline, 'no checkpoint within the timeout'
        time.sleep(0.02)
    assert proc.poll() is None, 'the run finished before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return os.path.basename(record.read_text().strip())


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_exact(tmp_path):
    paths = write_classification_set(str(tmp_path / 'data'), num_train=4, num_val=2,
                                     image_size=32)
    root = paths['data_root']
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    check(run(train_cmd(root, full)))

    saved = kill_after_first_checkpoint(train_cmd(root, killed), killed)
    assert saved in [f'epoch_{e}.pth' for e in range(1, EPOCHS)], saved
    resumed = check(run(train_cmd(root, killed, '--resume')))
    resumed_from = int(saved[len('epoch_'):-len('.pth')])
    assert f'resumed epoch: {resumed_from}, iter: {resumed_from * 6}' in resumed.stdout + \
        resumed.stderr

    use_safe_checkpoint_loader()
    a = torch.load(full / f'epoch_{EPOCHS}.pth', weights_only=True)
    b = torch.load(killed / f'epoch_{EPOCHS}.pth', weights_only=True)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    differing = [k for k in a['state_dict'] if not torch.equal(a['state_dict'][k],
                                                               b['state_dict'][k])]
    assert differing == []
    for group_a, group_b in zip(a['optimizer']['state'].values(),
                                b['optimizer']['state'].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in group_a)
    # the random states of the end of the last epoch, too
    assert torch.equal(a[CHECKPOINT_KEY]['per_rank'][0]['torch'],
                       b[CHECKPOINT_KEY]['per_rank'][0]['torch'])

    # every logged loss, temperature and validation top-1 after the resume point is the same
    def logged(rows, key):
        return [(r['step'], r[key]) for r in rows if key in r]

    full_rows, resumed_rows = scalars(full), scalars(killed, last_run_only=True)
    for key in ('loss', 'kw_temperature', 'lr'):
        after = [(s, v) for s, v in logged(full_rows, key) if s > resumed_from * 6]
        assert len(after) == (EPOCHS - resumed_from) * 6
        assert logged(resumed_rows, key) == after, key
    val_full = [r['accuracy/top1'] for r in full_rows if 'accuracy/top1' in r]
    val_resumed = [r['accuracy/top1'] for r in resumed_rows if 'accuracy/top1' in r]
    assert len(val_full) == EPOCHS and val_resumed == val_full[resumed_from:]
