"""The compiled contestants (kw_mm.analysis.compiled, compiled_bench) and ``--compile``'s
presets: tiny runs (backend ``aot_eager``: the same Dynamo graphs without inductor's code
generation), no timing asserts."""
import importlib.util
import json
import os.path as osp
import re

import pytest
import torch

from kw_mm.analysis import compiled_bench as cb
from kw_mm.analysis.compiled import CompiledContestant
from kw_mm.analysis.contestants import (CONTESTANT_KINDS, build_spec, calibrate_norms,
                                        load_spec, make_contestant)
from tests.helpers import REPO_ROOT as ROOT

KW = osp.join(ROOT, 'configs', 'kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k.py')
PLAIN = osp.join(ROOT, 'configs', 'mobilenet-v2-w0.5_8xb32-150e_in1k.py')


def tool_presets():
    """tools/analysis/benchmark_presets.py, the presets and targets of the tool."""
    path = osp.join(ROOT, 'tools', 'analysis', 'benchmark_presets.py')
    spec = importlib.util.spec_from_file_location('benchmark_presets', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compiled_kind_runs_the_model_compiled_and_keeps_compile_times():
    assert CONTESTANT_KINDS['compiled'] is CompiledContestant
    spec = load_spec(KW)
    model = build_spec(spec)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calibrate_norms(model, x)
    torch._dynamo.reset()
    c = make_contestant('compiled', 'kw (compiled)', model, spec, backend='aot_eager')
    assert c.kind == 'compiled' and c.forward() is c.compiled and c.backend == 'aot_eager'
    for key, step in (('eval_bN', c.eval_fn(x)), ('train', c.train_fn(x))):
        assert c.warm(key, step) > 0
        step()  # compiled once: later calls run the graph
    assert set(c.compile_seconds) == {'eval_bN', 'train'}
    model.eval()
    with torch.no_grad():  # (equal up to float32 rounding: tests/test_models/test_compile.py)
        expected = model(x, mode='tensor')
        error = (c.compiled(x, mode='tensor') - expected).abs().max() / expected.abs().max()
        assert error < 1e-3


def test_compiled_pair_times_four_contestants_and_reports_targets():
    lines = []
    result = cb.benchmark_compiled_pair(KW, PLAIN, batch=2, size=32, reps=1, warmup=0,
                                        metrics=['eval_b1', 'eval_bN', 'train'],
                                        backend='aot_eager', log=lines.append)
    assert any('KW compiled eval_b1: compiled in' in line for line in lines)
    for metric in ('eval_b1', 'eval_bN', 'train'):
        assert set(result.times_ms[metric]) == set(cb.CONTESTANTS)
        assert set(result.ratios[metric]) == set(cb.RATIOS)
        assert set(result.compile_s[metric]) == {'KW compiled', 'plain compiled'}
    assert set(result.parity) == {'KW', 'plain'}
    assert all(err < 1e-3 for errors in result.parity.values() for err in errors.values())
    # targets at batch 2 ('eval_b2'); a KW/plain ratio above 0 misses a bound of 0
    targets = {result.kw: dict(compiled=dict(eval_b2=0.0), compiled_vs_eager=dict(
        eval_b1=1e9), eager=dict(eval_b1=0.0))}
    table = cb.format_compiled_results([result], targets)
    rows = [row for row in table.splitlines() if row.startswith('|')]
    assert len(rows) == 2 + 3 and len({row.count('|') for row in rows}) == 1
    assert '(target <= 0x: MISSED)' in table and '(target <= 1e+09x: met)' in table
    # a miss carries the profile of both compiled steps; a met target none
    report = table.split('Targets:')[1].splitlines()
    miss = next(i for i, line in enumerate(report) if line.endswith('MISSED'))
    assert report[miss + 1].startswith('  profile (compiled step')
    assert re.search(r'KW \S.* \d+% \(\d+ calls\).*; plain \S.* \d+% \(\d+ calls\)',
                     report[miss + 1]), report[miss + 1]
    assert sum('profile' in line for line in report) == 1
    assert f'- {result.kw} eval_b2 compiled KW/plain:' in table
    assert f'- {result.kw} eval_b1 KW compiled/eager:' in table
    assert 'eager KW/plain: ' not in table  # only the compiled ratios take targets
    assert 'Targets:' not in cb.format_compiled_results([result])
    json.dumps(result.to_dict())


def test_compiled_pair_refuses_a_plain_model_as_kw():
    with pytest.raises(ValueError, match='has no KernelWarehouse layer'):
        cb.benchmark_compiled_pair(PLAIN, PLAIN, batch=2, size=32, reps=1, warmup=0,
                                   metrics=['eval_b1'], backend='aot_eager', log=lambda _: 0)


def test_compile_presets_and_targets():
    presets = tool_presets()
    pairs = presets.PRESETS['paper-cpu']['compile_pairs']
    names = {osp.splitext(osp.basename(kw))[0] for kw, _ in pairs}
    assert set(presets.COMPILE_TARGETS) == names
    for goals in presets.COMPILE_TARGETS.values():
        assert set(goals) <= set(cb.TARGET_RATIOS)
        for bounds in goals.values():
            assert set(bounds) <= {'eval_b1', 'eval_b8', 'train'}
