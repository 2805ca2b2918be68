"""kw_mm.analysis.bench_session: a whole (tiny) session as make bench runs it; no timing asserts."""
import json

from kw_mm.analysis import bench_session as bs
from kw_mm.analysis.report import Targets, format_session

from tests.helpers import REPO_ROOT as ROOT

KW = f'{ROOT}/configs/kw1x-resnet18_8xb32_in1k.py'
PLAIN = f'{ROOT}/configs/resnet18_8xb32_in1k.py'


def test_session_prints_machine_limits_load_and_targets():
    lines = []
    session = bs.run_session([(KW, PLAIN)], threads=1, batch=2, size=32, reps=1, warmup=0,
                             metrics=['eval_bN'], memory=False, load=1, log=lines.append)
    assert lines[0].startswith('CPU: ') and '  eval_bN with 1 busy core(s)' in lines
    (result, ) = session['results']
    assert result.ratios['eval_bN'][result.kw] > 0
    assert set(session['limits'][result.kw]['models']) == {'eval_bN'}
    assert len(session['limits'][result.kw]['layers']) == 19
    assert session['loads'][result.kw]['eval_bN'] > 0
    targets = Targets(models={result.kw: dict(eval_b8=1.5)}, layers={result.kw: 1.5}, load=1.5,
                      batch=2)
    text = format_session(session, targets)
    for part in ('1 threads; GEMM rate', '| Model | Metric | KW ms |', 'KW layers of',
                 'Under load (1 busy core(s)), eval b2', 'Targets:',
                 'every KW layer KW/limit', 'under load / quiet'):
        assert part in text, part
    json.dumps(bs.session_to_dict(session))  # JSON-ready


def test_explain_models_and_layer_spec():
    text = bs.explain_models([KW], batch=2, size=32)
    assert text.startswith(f'# {KW} (batch 2, 32x32)\nCPU: ')
    assert text.count('backbone.') == 19
    layer = bs.explain_layer_spec(512, 512, 3, size=7, batch=8)
    assert 'layer [8x512x7x7]: im2col' in layer and 'columns' in layer
