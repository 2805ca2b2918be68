"""Cluster launches: tools/dist_train.sh as two nodes of one process each (two launchers on
this machine) trains the same model as one node of two processes; tools/slurm_train.sh and
slurm_test.sh pass OpenMMLab's arguments and variables to srun, and refuse missing arguments
in one line."""
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers.tool_runs import ROOT, check, free_port, run


def _final_state(work_dir) -> dict:
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        path = f.read().strip()
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


@pytest.mark.slow
def test_two_nodes_train_as_one_node_of_two_processes(tiny, tmp_path):
    one_node = tmp_path / 'one_node'
    check(run(['bash', 'tools/dist_train.sh', tiny['cfg'], '2', '--work-dir', str(one_node)],
              PORT=str(free_port())))
    two_nodes = tmp_path / 'two_nodes'
    port = str(free_port())
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', NNODES='2',
               MASTER_ADDR='127.0.0.1', PORT=port)
    launchers = [subprocess.Popen(['bash', 'tools/dist_train.sh', tiny['cfg'], '1',
                                   '--work-dir', str(two_nodes)], cwd=ROOT,
                                  env=dict(env, NODE_RANK=str(rank)), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=900) for p in launchers]
    for proc, (out, err) in zip(launchers, outputs):
        assert proc.returncode == 0, f'{out[-2000:]}\n{err[-4000:]}'
    assert 'Epoch(train) [2][2/2]' in outputs[0][0] + outputs[0][1]  # 2 iterations per epoch
    expected, got = _final_state(one_node), _final_state(two_nodes)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)


def _slurm(script, args, tmp_path, **env):
    fake = tmp_path / 'bin'
    fake.mkdir(exist_ok=True)
    srun = fake / 'srun'  # the cluster's srun: prints what it was asked to run
    srun.write_text('#!/usr/bin/env bash\nfor a in "$@"; do echo "ARG $a"; done\n'
                    'echo "PYTHONPATH $PYTHONPATH"\n')
    srun.chmod(0o755)
    full = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", PYTHON='python3', **env)
    return subprocess.run(['bash', f'tools/{script}', *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def test_slurm_train_passes_the_job_to_srun(tmp_path):
    proc = _slurm('slurm_train.sh', ['gpu', 'kw-r50', 'configs/kw1x-resnet50_8xb512-300e_in1k.py',
                                     'work_dirs/kw', '--auto-scale-lr'], tmp_path, GPUS='16',
                  CPUS_PER_TASK='6', SRUN_ARGS='--time=72:00:00 --quotatype=auto')
    assert proc.returncode == 0, proc.stderr
    args = [line[4:] for line in proc.stdout.splitlines() if line.startswith('ARG ')]
    assert args == ['-p', 'gpu', '--job-name=kw-r50', '--gres=gpu:8', '--ntasks=16',
                    '--ntasks-per-node=8', '--cpus-per-task=6', '--kill-on-bad-exit=1',
                    '--time=72:00:00', '--quotatype=auto', 'python3', '-u',
                    os.path.join(ROOT, 'tools', 'train.py'),
                    'configs/kw1x-resnet50_8xb512-300e_in1k.py', '--work-dir', 'work_dirs/kw',
                    '--auto-scale-lr', '--launcher', 'slurm']
    assert f'PYTHONPATH {ROOT}/tools/..' in proc.stdout


def test_slurm_test_passes_the_checkpoint(tmp_path):
    proc = _slurm('slurm_test.sh', ['gpu', 'eval', 'c.py', 'ckpt.pth', '--out', 'p.pkl'],
                  tmp_path, GPUS='2')
    assert proc.returncode == 0, proc.stderr
    args = [line[4:] for line in proc.stdout.splitlines() if line.startswith('ARG ')]
    assert args[:6] == ['-p', 'gpu', '--job-name=eval', '--gres=gpu:2', '--ntasks=2',
                        '--ntasks-per-node=2']
    assert args[-7:] == [os.path.join(ROOT, 'tools', 'test.py'), 'c.py', 'ckpt.pth', '--out',
                         'p.pkl', '--launcher', 'slurm']


@pytest.mark.parametrize('script,args', [('slurm_train.sh', ['gpu', 'job', 'c.py']),
                                         ('slurm_test.sh', [])])
def test_slurm_without_its_arguments(script, args, tmp_path):
    proc = _slurm(script, args, tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('usage: ') and 'PARTITION JOB_NAME CONFIG' \
        in lines[0] and f'(got {len(args)} of the 4 arguments)' in lines[0]
    assert 'ARG' not in proc.stdout


def test_slurm_bad_gpu_count(tmp_path):
    proc = _slurm('slurm_train.sh', ['gpu', 'job', 'c.py', 'w'], tmp_path, GPUS='eight')
    assert proc.returncode == 2
    assert proc.stderr.strip() == "slurm_run.sh: GPUS must be a positive integer, got 'eight'"
