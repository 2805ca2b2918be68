"""tools/analysis/benchmark.py as a user runs it (subprocess; no timing asserts)."""
import sys

import pytest

from tests.helpers.tool_runs import check, run


@pytest.mark.slow
def test_explain_prints_machine_and_every_layer_plan():
    out = check(run([sys.executable, 'tools/analysis/benchmark.py', '--explain',
                     'configs/kw1x-resnet18_8xb32_in1k.py', '--batch', '2', '--size', '64',
                     '--threads', '1'])).stdout
    lines = out.splitlines()
    assert lines[0] == '# configs/kw1x-resnet18_8xb32_in1k.py (batch 2, 64x64)'
    assert lines[1].startswith('CPU: ') and 'L2' in lines[1] and '1 threads' in lines[1]
    layers = [line for line in lines if line.startswith('backbone.')]
    assert len(layers) == 19
    assert any('[2x512x2x2]: im2col' in line for line in layers)
    assert any('[2x64x16x16]: grouped' in line for line in layers)
    assert all('x L2' in line or 'given' in line for line in layers)
