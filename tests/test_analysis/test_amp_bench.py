"""The AMP contestant (kw_mm.analysis.amp) and ``tools/analysis/benchmark.py --amp``
(kw_mm.analysis.amp_bench): tiny runs, no timing asserts."""
import os.path as osp
import sys

import pytest
import torch

from kw_mm.analysis import amp_bench as ab
from kw_mm.analysis.amp import AmpContestant, amp_dtype
from kw_mm.analysis.contestants import (CONTESTANT_KINDS, build_spec, calibrate_norms,
                                        load_spec, make_contestant)
from kw_mm.cnn import KWConvNd
from kw_mm.cnn.attention import KWAttention
from tests.helpers import REPO_ROOT as ROOT
from tests.helpers.tool_runs import check, run

KW = osp.join(ROOT, 'configs', 'kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k.py')
PLAIN = osp.join(ROOT, 'configs', 'mobilenet-v2-w0.5_8xb32-150e_in1k.py')


@pytest.fixture(scope='module')
def kw_model():
    spec = load_spec(KW)
    model = build_spec(spec)
    calibrate_norms(model, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    return spec, model


def test_amp_kind_trains_under_autocast_at_its_temperature(kw_model):
    spec, model = kw_model
    assert CONTESTANT_KINDS['amp'] is AmpContestant
    c = make_contestant('amp', 'kw amp', model, spec, temperature=0.5)
    assert c.scaler is None and c.dtype == torch.bfloat16
    attentions = [m for m in c.model.modules() if isinstance(m, KWAttention)]
    assert attentions and all(m.temperature == 0.5 and m.splits_under_autocast
                              for m in attentions)
    dtypes = []
    layer = next(m for m in c.model.modules() if isinstance(m, KWConvNd))
    handle = layer.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    before = layer.cells.detach().clone()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    c.train_fn(x)()
    c.eval_fn(x)()
    handle.remove()
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert layer.cells.dtype == torch.float32 and not torch.equal(before, layer.cells)


def test_amp_float16_has_a_gradient_scaler_and_bad_dtypes_are_named(kw_model):
    spec, model = kw_model
    assert AmpContestant('kw fp16', model, spec, dtype=torch.float16).scaler is not None
    with pytest.raises(ValueError, match=r'bfloat16 or float16, got torch\.float32'):
        AmpContestant('kw', model, spec, dtype=torch.float32)
    assert amp_dtype('bf16') is torch.bfloat16 and amp_dtype('float16') is torch.float16
    with pytest.raises(ValueError, match=r"one of \['bf16', 'bfloat16', 'float16', 'fp16'\], "
                       r"got 'half'"):
        amp_dtype('half')


def test_amp_pair_times_five_contestants_and_its_table_has_every_ratio():
    lines = []
    result = ab.benchmark_amp_pair(KW, PLAIN, batch=2, size=32, reps=1, warmup=0,
                                   metrics=['eval_bN', 'train'], log=lines.append)
    assert result.dtype == 'bfloat16'
    for metric in ('eval_bN', 'train'):
        assert set(result.times_ms[metric]) == set(ab.CONTESTANTS)
        assert set(result.ratios[metric]) == set(ab.RATIOS)
        assert all(v > 0 for v in result.ratios[metric].values())
    table = ab.format_amp_results([result])
    rows = [row for row in table.splitlines() if row.startswith('|')]
    assert len(rows) == 2 + 2 and len({row.count('|') for row in rows}) == 1
    assert '| eval_b2 |' in table and '| train |' in table
    assert all(name in rows[0] for name in ab.RATIO_NAMES.values())
    with pytest.raises(ValueError, match='has no KernelWarehouse layer'):
        ab.benchmark_amp_pair(PLAIN, PLAIN, batch=2, size=32, reps=1, warmup=0)


def test_benchmark_tool_amp_writes_its_table(tmp_path):
    out = tmp_path / 'amp.md'
    proc = check(run([sys.executable, 'tools/analysis/benchmark.py', '--amp', f'{KW}:{PLAIN}',
                      '--size', '32', '--batch', '2', '--reps', '1', '--warmup', '0',
                      '--threads', '1', '--markdown', str(out)]))
    text = out.read_text()
    assert text.startswith('CPU: ') and 'autocast bfloat16' in text
    assert 'KW AMP t=0.5 / t=0' in text and '| train |' in text and '| eval_b' not in text
    assert 'AMP (bfloat16):' in proc.stdout
    bad = run([sys.executable, 'tools/analysis/benchmark.py', '--amp', '--amp-dtype', 'half',
               KW])
    assert bad.returncode == 2 and "invalid choice: 'half'" in bad.stderr
