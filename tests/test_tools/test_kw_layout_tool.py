"""tools/analysis/kw_layout.py and tools/analysis/kw_wrapped_zoo.py as a user runs them."""
import re
import sys

import pytest

from tests.helpers.tool_runs import check, run


@pytest.mark.slow  # starts a subprocess
def test_layout_of_a_wrapped_backbone_and_of_a_hand_built_one():
    out = check(run([sys.executable, 'tools/analysis/kw_layout.py',
                     'configs/kw1x-resnext50-32x4d_8xb512-300e_in1k.py',
                     'configs/kw1x-resnet18_8xb32_in1k.py'])).stdout
    wrapped, hand = out.split('config: configs/kw1x-resnet18_8xb32_in1k.py')
    assert '[backbone] KWResNeXt: KWBackbone(ResNeXt, budget=1)' in wrapped
    assert 'budget 1: 8 warehouses' in wrapped
    # one warehouse of dense layers and one of grouped 3x3 layers per stage
    heads = re.findall(r'^(stage\d_\w+): cell \[(\d+), (\d+), 1, 1\], m=(\d+), n=(\d+)', wrapped,
                       re.M)
    # (module order of their first layers: layer1.0.conv1 is static, conv2 grouped)
    assert [h[0] for h in heads] == [f'stage{s}_{k}' for s in range(4)
                                     for k in ('group', 'conv')]
    assert all(m == n for *_, m, n in heads)
    assert heads[0][1:3] == ('128', '4')  # 3x3 kernels of 32 groups: 4 input channels each
    assert re.search(r'^  layer2\.0\.downsample\.0 +pw +\[512, 256, 1, 1\] +M=\d+ +stage 0, '
                     r'reassigned to the previous stage', wrapped, re.M)
    assert re.search(r'^  conv1 +conv +\[64, 3, 7, 7\] +static: depth 1', wrapped, re.M)
    assert re.search(r'^  layer1\.0\.downsample\.0 +pw .*static: depth 2', wrapped, re.M)
    # a hand-built backbone: its warehouses and layers
    assert '[backbone] KWResNet: 4 warehouses' in hand
    assert re.findall(r'm=(\d+), n=(\d+)', hand) == [('56', '56'), ('47', '47'), ('47', '47'),
                                                     ('27', '27')]
    assert 'parameters: 11,932,148' in hand


@pytest.mark.slow  # starts a subprocess
def test_wrapped_zoo_counts():
    out = check(run([sys.executable, 'tools/analysis/kw_wrapped_zoo.py', 'efficientnet-b0',
                     '--no-speed', '--budgets', '1'])).stdout
    rows = [line for line in out.splitlines() if line.startswith('| EfficientNet-B0')]
    assert len(rows) == 2 and rows[0].split('|')[2].strip() == '-'
    assert rows[1].split('|')[2].strip() == '1x' and re.search(r'\(\d\.\d\dG\)', rows[1])
    assert rows[1].split('|')[-3:-1] == [' - ', ' - ']  # no timing
    assert 'not measured' in out and 'CPU: ' not in out


@pytest.mark.slow  # starts a subprocess and times two models
def test_wrapped_zoo_times_side_by_side_and_writes_the_section(tmp_path):
    doc = tmp_path / 'zoo.md'
    doc.write_text('# zoo\n<!-- wrapped-zoo:start -->\n<!-- wrapped-zoo:end -->\nafter\n')
    proc = check(run([sys.executable, 'tools/analysis/kw_wrapped_zoo.py', 'efficientnet-b0',
                      '--budgets', '1', '--reps', '1', '--warmup', '0', '--size', '32',
                      '--batch', '2', '--write', str(doc)]))
    text = doc.read_text()
    assert text.startswith('# zoo\n<!-- wrapped-zoo:start -->\nWritten by ')
    assert text.endswith('<!-- wrapped-zoo:end -->\nafter\n')
    assert re.search(r'^CPU: .*; 2 threads; GEMM rate \d+ GFLOP/s', text, re.M)
    kw = [line for line in text.splitlines() if line.startswith('| EfficientNet-B0 | 1x')]
    assert len(kw) == 1 and re.search(r'\| \d+\.\d\dx \| \d+\.\d\dx \|$', kw[0]), kw
    assert '| Eval b2 / plain | Train b2 / plain |' in text
    assert 'eval_bN: 2 models x 1 rounds' in proc.stderr


def test_wrapped_zoo_refuses_a_document_without_the_section(tmp_path):
    doc = tmp_path / 'zoo.md'
    doc.write_text('# zoo\n')
    proc = run([sys.executable, 'tools/analysis/kw_wrapped_zoo.py', '--write', str(doc)])
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        f'--write: {doc} has no wrapped-zoo section: put the lines <!-- wrapped-zoo:start --> '
        'and <!-- wrapped-zoo:end --> where the table goes')
    assert doc.read_text() == '# zoo\n'
