"""tools/analysis/gpu_check.py: the whole check runs on the CPU on tiny shapes (the script
itself, as it will run on a GPU); without CUDA and without --device cpu it stops in one line."""
import os.path as osp
import sys

import pytest
import torch

from kw_mm.analysis.gpu_check import _build, _train_step, check_trained, relative_error
from kw_mm.cnn import set_temperature
from tests.helpers import REPO_ROOT
from tests.helpers.tool_runs import run

KW_CONFIG = osp.join(REPO_ROOT, 'configs', 'kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k.py')
PLAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'mobilenet-v2-w0.5_8xb32-150e_in1k.py')


def test_relative_error():
    a = torch.tensor([1.0, 2.0, 2.0])
    assert relative_error(a, a) == 0
    assert relative_error(a * (1 + 1e-3), a) == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.slow
def test_quick_check_on_the_cpu(tmp_path):
    out = tmp_path / 'gpu_check.md'
    proc = run([sys.executable, 'tools/analysis/gpu_check.py', '--device', 'cpu', '--quick',
                '--markdown', str(out)], timeout=1200)
    lines = proc.stdout.splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith('kw_mm GPU check on cpu: ')]
    assert start, proc.stdout[-3000:] + proc.stderr[-4000:]
    lines = lines[start[0]:]  # mmengine's log lines come first
    assert lines[0].startswith('kw_mm GPU check on cpu: CPU ')
    assert f'torch {torch.__version__}; CUDA ' in lines[0]
    rows = [line.split() for line in lines[2:] if line.strip()]
    assert {row[0] for row in rows} == {'a', 'b', 'c', 'd'}
    checks = [row for row in rows if row[-1] in ('ok', 'FAIL')]
    layer_rows = [row for row in checks if row[0] == 'a' and row[1] == 'KW']
    paths = {row[row.index('path') + 1] for row in layer_rows}
    assert paths == {'grouped', 'pointwise', 'im2col', 'im2col-transposed'}, paths
    assert len(checks) == len(layer_rows) + 5 + 4 * 3  # backbones, three training steps each
    # the exit status follows the verdicts
    failed = [' '.join(row) for row in checks if row[-1] == 'FAIL']
    assert proc.returncode == (1 if failed else 0), proc.stderr[-3000:]
    # every path of every layer matches the oracle, and training in float32 and bfloat16 is
    # finite (whole backbones and float16 steps are reported as they come)
    assert not [row for row in failed if row.startswith('a KW ') or
                (row.startswith('b ') and ' fp16 ' not in row)], failed
    assert '| d |' in out.read_text()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='the error is for machines without CUDA')
def test_no_cuda_is_one_line():
    proc = run([sys.executable, 'tools/analysis/gpu_check.py'])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith('gpu_check.py: no CUDA device here')
    assert 'pass --device cpu' in lines[0]


def test_trained_weights_are_loaded_strictly_and_stepped_at_t0(tmp_path):
    """(b) on a checkpoint: its weights (not the built ones), KW at t = 0, three steps."""
    model = _build(KW_CONFIG, {}, False)
    with torch.no_grad():
        model.backbone.warehouse_manager.weights[0].mul_(2)  # not what a fresh build has
    path = tmp_path / 'kw.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    rows = check_trained(torch.device('cpu'), [(KW_CONFIG, str(path))], 32, 2)
    assert [r.subject.split(' train step ')[1].split()[0] for r in rows] == \
        ['fp32', 'fp16', 'bf16']
    # (a random network at t = 0 is chaotic: its AMP rows are figures, only float32 must hold)
    assert rows[0].ok and all(str(path) in r.subject for r in rows)
    assert 'grad cosine to fp32' in rows[2].measured
    # the fp32 loss is the checkpoint's model's at t = 0, not a fresh build's
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    set_temperature(model, 0.0)
    fresh = _build(KW_CONFIG, {}, False)
    assert rows[0].measured == f"loss {_train_step(model, x, None)['loss']:.4f}"
    assert rows[0].measured != f"loss {_train_step(fresh, x, None)['loss']:.4f}"
    # a checkpoint of another model is refused, naming what differs
    plain = tmp_path / 'plain.pth'
    torch.save(dict(state_dict=_build(PLAIN_CONFIG, {}, False).state_dict()), plain)
    with pytest.raises(RuntimeError, match='missing keys in source state_dict'):
        check_trained(torch.device('cpu'), [(KW_CONFIG, str(plain))], 32, 2)


@pytest.mark.parametrize('argv,message', [
    (['--checkpoint', KW_CONFIG, 'nonsense.pth'], f'--checkpoint {KW_CONFIG} nonsense.pth: '
     'nonsense.pth is not a file (give a config and its checkpoint)'),
    (['--checkpoint', KW_CONFIG], '--checkpoint: expected 2 arguments'),
    (['--parts', 'a', '--checkpoint', KW_CONFIG, KW_CONFIG], '--checkpoint runs in part b'),
])
def test_checkpoint_option_bad_input(argv, message):
    proc = run([sys.executable, 'tools/analysis/gpu_check.py', '--device', 'cpu', *argv])
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
