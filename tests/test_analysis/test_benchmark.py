"""The benchmark's measuring code (kw_mm.analysis.benchmark / measure / contestants / report)
and the tool's presets: tiny runs, no timing asserts."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest
import torch

from kw_mm.analysis import benchmark as bm
from kw_mm.analysis import measure
from kw_mm.analysis.contestants import (CONTESTANT_KINDS, Contestant, make_contestant,
                                        register_contestant_kind)
from kw_mm.analysis.report import Targets, format_layer_rows, format_pairs

from tests.helpers import REPO_ROOT as ROOT


def tool_presets():
    """tools/analysis/benchmark_presets.py, the presets and targets of the tool."""
    path = osp.join(ROOT, 'tools', 'analysis', 'benchmark_presets.py')
    spec = importlib.util.spec_from_file_location('benchmark_presets', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_twin_of_configs_and_variants():
    kw = osp.join(ROOT, 'configs', 'kw1x-resnet18_8xb32_in1k.py')
    assert bm.plain_twin(kw) == osp.join(ROOT, 'configs', 'resnet18_8xb32_in1k.py')
    kw = osp.join(ROOT, 'configs', 'kw1x-mobilenet-v2_8xb32-150e_in1k.py')
    assert bm.plain_twin(kw).endswith('configs/mobilenet-v2_8xb32-150e_in1k.py')
    assert bm.plain_twin('kw4x_resnet18') == 'resnet18'
    assert bm.plain_twin('kw1x_mobilenetv2_050') == 'mobilenetv2_050'
    assert bm.parse_pair('kw1x_resnet50') == ('kw1x_resnet50', 'resnet50')
    assert bm.parse_pair('a.py:b.py') == ('a.py', 'b.py')
    with pytest.raises(ValueError, match='no plain twin'):
        bm.plain_twin(osp.join(ROOT, 'configs', 'resnet18_8xb32_in1k.py'))


def test_preset_configs_exist_and_load():
    presets = tool_presets()
    for kw, plain in presets.PRESETS['paper-cpu']['pairs']:
        for path in (kw, plain):
            spec = bm.load_spec(osp.join(ROOT, path))
            assert spec.cfg['type'] and spec.optim_cfg is not None
            optimizer = bm.build_optimizer(torch.nn.Linear(2, 2), spec)
            assert type(optimizer).__name__ == spec.optim_cfg['optimizer']['type']
        assert osp.splitext(osp.basename(kw))[0] in presets.TARGETS.models
    assert set(presets.TARGETS.layers) <= set(presets.TARGETS.models)


def test_load_spec_errors():
    with pytest.raises(ValueError, match='neither a config file'):
        bm.load_spec('resnet19')
    with pytest.raises(FileNotFoundError, match='missing.py'):
        bm.load_spec('missing.py')


def test_interleaved_times_and_ratios():
    calls = []
    times = measure.interleaved_times({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')},
                                 reps=3, warmup=1)
    assert calls == ['a', 'b'] * 4  # round robin, warm-up first
    assert [len(v) for v in times.values()] == [3, 3]
    times = {'kw': [2.0, 4.0, 3.0], 'plain': [1.0, 1.0, 2.0]}
    assert measure.ratio_stats(times, 'kw', 'plain') == 2.0  # median of 2, 4, 1.5
    with pytest.raises(ValueError, match='clock'):
        measure.set_clock('sundial')


def test_peak_memory_counts_live_tensors():
    def step():
        a = torch.empty(2**20, dtype=torch.uint8)  # 1 MiB
        b = torch.empty(2**21, dtype=torch.uint8)  # 2 MiB while a is alive
        del a, b
        torch.empty(2**20, dtype=torch.uint8)

    peak = measure.peak_memory(step, torch.device('cpu'))
    assert 3 * 2**20 <= peak < 4 * 2**20


def test_benchmark_layer_rows():
    row = bm.benchmark_layer(8, 16, 3, size=6, batch=2, reps=1, warmup=0)
    assert set(row['times_ms']) == {'eval', 'train'}
    assert set(row['times_ms']['eval']) == {'kw', 'kw reference', 'conv'}
    assert row['num_mixtures'] == 9 and row['num_cells'] == 9
    assert set(row['memory_mb']) == {'kw', 'kw reference', 'conv'}
    table = format_layer_rows([row])
    assert table.count('\n') == 2 and '8->16 k3' in table


def test_pair_table_format():
    r = bm.PairResult('kw1x-resnet18_8xb32_in1k', 'resnet18_8xb32_in1k',
                      params={'kw1x-resnet18_8xb32_in1k': 11932148, 'resnet18_8xb32_in1k': 11689512})
    r.times_ms = {'eval_bN': {'kw1x-resnet18_8xb32_in1k': 30.0, 'resnet18_8xb32_in1k': 20.0}}
    r.ratios = {'eval_bN': {'kw1x-resnet18_8xb32_in1k': 1.5}}
    r.memory_mb = {'train': {'kw1x-resnet18_8xb32_in1k': 240.0, 'resnet18_8xb32_in1k': 200.0,
                             'kw1x-resnet18_8xb32_in1k (reference)': 650.0}}
    targets = Targets(models={'kw1x-resnet18_8xb32_in1k': dict(eval_b8=1.5)})
    table = format_pairs([r], 8, targets)
    rows = table.splitlines()
    assert len({row.count('|') for row in rows}) == 1  # every row has every column
    assert '1.50x (target <= 1.5x: met)' in table
    assert '0.37x' in table  # peak memory KW / straightforward implementation
    assert 'target' not in format_pairs([r], 8)  # the library sets no target
    assert 'target' not in format_pairs([r], 4, targets)  # set for batch 8


class Doubled(Contestant):
    """A contestant kind for the test: runs the eager step twice (eval only)."""

    kind = 'doubled'
    trains = False

    def eval_fn(self, inputs):
        once = super().eval_fn(inputs)

        def step():
            once()
            once()
        return step


def test_contestant_kinds_share_one_side_by_side_path():
    """A registered kind is measured beside the eager models, named 'model (kind)', ratios to
    the plain model; a kind without a training step is left out of 'train'."""
    register_contestant_kind('doubled', Doubled)
    try:
        models = [osp.join(ROOT, 'configs', c) for c in (
            'mobilenet-v2-w0.5_8xb32-150e_in1k.py', 'kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k.py')]
        result = bm.benchmark_side_by_side(models, batch=2, size=32, reps=1, warmup=0,
                                           metrics=['eval_bN', 'train'], memory=True,
                                           log=lambda _: 0, kinds=('eager', 'doubled'))
        plain, kw = (osp.splitext(osp.basename(m))[0] for m in models)
        assert result.names == [plain, f'{plain} (doubled)', kw, f'{kw} (doubled)']
        assert set(result.times_ms['eval_bN']) == set(result.names)
        assert set(result.times_ms['train']) == {plain, kw}
        assert set(result.memory_mb['train']) == {plain, kw}
        assert set(result.memory_mb['eval']) == set(result.names)
        assert result.ratios['eval_bN'][plain] == 1.0
        with pytest.raises(ValueError, match="already registered"):
            register_contestant_kind('doubled', Contestant)
        with pytest.raises(ValueError, match="got 'interpreted'"):
            make_contestant('interpreted', 'x', torch.nn.Linear(1, 1), None)
    finally:
        CONTESTANT_KINDS.pop('doubled')


ALLOCATOR_PROBE = '''
import resource, sys, torch
from kw_mm.analysis import measure
mode = measure.set_allocator(sys.argv[1])
def touch():
    t = torch.empty(16 * 2**20)  # 64 MB, above glibc's largest mmap threshold
    t.fill_(1.0)
    del t
touch()
faults = []
for _ in range(5):  # the fewest page faults of five re-allocations (memory reclaim by the
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt  # kernel may hit one)
    touch()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(mode, measure.environment()['allocator'], min(faults))
'''


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize('mode', ['warm', 'system'])
def test_allocator_regime(mode):
    """'warm' keeps a freed 64 MB block for the next one (no new page faults); the system
    default maps it afresh and faults every page in again, every time."""
    out = subprocess.run([sys.executable, '-c', ALLOCATOR_PROBE, mode], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[:2] == [mode, mode]
    faults = int(out[2])
    pages = 64 * 2**20 // 4096
    if mode == 'warm':
        assert faults < pages // 10
    else:
        assert faults > pages // 2
    with pytest.raises(ValueError, match="got 'cold'"):
        measure.set_allocator('cold')
