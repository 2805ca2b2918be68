"""The side-by-side benchmark (plain, DY-Conv, ODConv, CondConv, KW, KW* in one interleaved run):
its presets, a tiny real run, its table and its errors. No timing is asserted (the machine is
shared): only that every number is there and the ratios refer to the plain model."""
import json
import os.path as osp
import re
import sys

import pytest

from kw_mm.analysis.benchmark import benchmark_side_by_side
from kw_mm.analysis.report import format_side_by_side

from tests.helpers.tool_runs import ROOT, check, run
from .test_benchmark import tool_presets


def test_presets_name_existing_configs_with_the_plain_model_first():
    for name, models in tool_presets().SIDE_BY_SIDE_PRESETS.items():
        assert all(osp.isfile(osp.join(ROOT, m)) for m in models), name
        assert not osp.basename(models[0]).startswith(('kw', 'dyconv', 'odconv', 'condconv'))


def test_tiny_run_measures_every_model_against_the_plain_one():
    models = [osp.join(ROOT, 'configs', c) for c in (
        'mobilenet-v2-w0.5_8xb32-150e_in1k.py', 'dyconv4x-mobilenet-v2-w0.5_8xb32-150e_in1k.py',
        'odconv4x-mobilenet-v2-w0.5_8xb32-150e_in1k.py',
        'kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k.py')]
    result = benchmark_side_by_side(models, batch=2, size=32, reps=1, warmup=0, log=lambda _: 0)
    names = result.names
    assert result.plain == names[0] == 'mobilenet-v2-w0.5_8xb32-150e_in1k'
    assert result.params[names[1]] == 4_567_338 and result.params[names[2]] == 4_435_501
    for metric in ('eval_b1', 'eval_bN', 'train'):
        assert set(result.times_ms[metric]) == set(names)
        assert all(t > 0 for t in result.times_ms[metric].values())
        assert result.ratios[metric][names[0]] == 1.0
    for kind in ('train', 'eval'):
        assert set(result.memory_mb[kind]) == set(names)
        assert all(m > 0 for m in result.memory_mb[kind].values())
    table = format_side_by_side(result)
    assert table.count('\n') == len(names) + 1 and '| 1.00x |' in table
    assert 'Train peak MB (b2)' in table


@pytest.mark.parametrize('models, message', [
    (['configs/resnet18_8xb32_in1k.py'], 'needs a plain model and at least one other'),
    (['configs/resnet18_8xb32_in1k.py'] * 2, 'models must differ'),
])
def test_bad_sets(models, message):
    with pytest.raises(ValueError, match=message):
        benchmark_side_by_side([osp.join(ROOT, m) for m in models], log=lambda _: 0)


@pytest.mark.slow
def test_command_line_side_by_side(tmp_path):
    proc = check(run([sys.executable, 'tools/analysis/benchmark.py', '--side-by-side',
                      'configs/resnet18_8xb32_in1k.py', 'configs/condconv8x-resnet18_8xb32_in1k.py',
                      '--batch', '2', '--size', '32', '--reps', '1', '--warmup', '0',
                      '--threads', '1', '--json', str(tmp_path / 'sbs.json')]))
    assert '| condconv8x-resnet18_8xb32_in1k | 81.35M |' in proc.stdout
    # the table names its machine (CPU, caches, threads) as every benchmark table does
    assert re.search(r'^CPU: .+; caches: .*L2 .+; 1 threads; GEMM rate \d+ GFLOP/s', proc.stdout,
                     re.M), proc.stdout
    report = json.loads((tmp_path / 'sbs.json').read_text())
    assert report['machine']['threads'] == 1 and report['side_by_side']['plain']
    proc = run([sys.executable, 'tools/analysis/benchmark.py', '--side-by-side', 'nonsense'])
    assert proc.returncode != 0 and 'wants a preset' in proc.stderr
