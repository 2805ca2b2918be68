"""``--compile`` of tools/train.py and tools/test.py (kw_mm.runner.compile): the option sets
mmengine's ``compile`` config key, the test tool compiles the model's ``test_step``, and the KW
demo config trains compiled as it trains eagerly."""
import argparse
import math
import os
import sys

import pytest
from mmengine.config import Config

from kw_mm.runner.compile import compile_options, compile_test_step, enable_compile
from kw_mm.runner.launch import add_runner_args, apply_runner_args
from tests.helpers.tool_runs import DEMO_CLS, check, run, scalars


def parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    add_runner_args(parser)
    return parser.parse_args([DEMO_CLS, *argv])


@pytest.fixture
def local_rank(monkeypatch):
    # apply_runner_args sets LOCAL_RANK for mmengine; keep it out of the other tests
    monkeypatch.setenv('LOCAL_RANK', os.environ.get('LOCAL_RANK', '0'))


def test_compile_option_sets_mmengine_key(local_rank):
    cfg = apply_runner_args(Config.fromfile(DEMO_CLS), parse(['--compile']))
    assert cfg.compile is True and compile_options(cfg) == {}
    plain = apply_runner_args(Config.fromfile(DEMO_CLS), parse([]))
    assert plain.get('compile') is None and compile_options(plain) is None


def test_compile_option_keeps_the_config_arguments(local_rank, tmp_path):
    path = tmp_path / 'compiled.py'
    path.write_text(f"_base_ = {DEMO_CLS!r}\ncompile = dict(mode='reduce-overhead')\n")
    cfg = apply_runner_args(Config.fromfile(str(path)), parse(['--compile']))
    assert compile_options(cfg) == dict(mode='reduce-overhead')


def test_compile_options_refuse_other_values():
    assert compile_options(dict(compile=False)) is None
    assert compile_options(dict(compile=dict(dynamic=False))) == dict(dynamic=False)
    with pytest.raises(TypeError, match=r"compile must be True, False or a dict .* got 'yes'"):
        compile_options(dict(compile='yes'))
    cfg = Config(dict(compile=dict(backend='inductor')))
    assert enable_compile(cfg).compile == dict(backend='inductor')


class _Runner:
    """What compile_test_step reads of a Runner: its config and model."""

    def __init__(self, cfg, model):
        self.cfg, self.model = cfg, model


def test_compile_test_step_wraps_the_step_only_when_asked():
    import torch.nn as nn

    class Model(nn.Module):
        def test_step(self, data):
            return data

    off = _Runner(Config(dict()), Model())
    assert not compile_test_step(off)
    assert 'test_step' not in vars(off.model)
    on = _Runner(Config(dict(compile=True)), Model())
    assert compile_test_step(on)
    compiled = vars(on.model)['test_step']
    assert compiled is not Model.test_step and callable(compiled)


@pytest.mark.slow  # starts subprocesses
def test_kw_demo_config_trains_compiled_as_eager(tiny):
    """``tools/train.py --compile`` trains the KW demo config (KW ResNet18, the temperature
    anneal) through mmengine's ``compile`` key: every iteration of the eager run, with the
    same temperatures and finite losses. Backend ``aot_eager`` (the graphs Dynamo and
    AOTAutograd trace, run by eager kernels; inductor's code generation of the whole training
    step would take minutes here, and its numerics are checked on KW ResNet18 in
    ``tests/test_models/test_compile.py``)."""
    compiled_cfg = tiny['tmp'] / 'tiny_cls_compiled.py'
    compiled_cfg.write_text(f"_base_ = {tiny['cfg']!r}\ncompile = dict(backend='aot_eager')\n")
    rows = {}
    for name, argv in (('eager', [tiny['cfg']]), ('compiled', [str(compiled_cfg), '--compile'])):
        work_dir = tiny['tmp'] / f'compile_option_{name}'
        check(run([sys.executable, 'tools/train.py', *argv,
                   '--work-dir', str(work_dir), '--cfg-options', 'randomness.seed=0']))
        rows[name] = [r for r in scalars(work_dir) if 'loss' in r]
        if name == 'compiled':
            log = open(next(work_dir.glob('*/*.log'))).read()
            assert "compile = dict(backend='aot_eager')" in log
    assert len(rows['eager']) == len(rows['compiled']) == 8  # 2 epochs of 4 iterations
    assert [r['kw_temperature'] for r in rows['compiled']] == pytest.approx(
        [r['kw_temperature'] for r in rows['eager']])
    assert all(math.isfinite(r['loss']) for r in rows['compiled'])
