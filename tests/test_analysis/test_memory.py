"""The memory model (tools/analysis/memory.py): fits, the verdict for a GPU too small, the
table beside the paper's Table 16, and a real measurement of a small model."""
import glob
import os.path as osp
import re
import sys

import pytest

from kw_mm.analysis.memory import (CONFIG_NOTE_HEAD, MB, PAPER_TABLE16, LinearFit,
                                   MemoryResult, annotate_config, config_note, fit_verdict,
                                   format_table, measure_memory, parse_memory,
                                   planning_context)

from tests.helpers import REPO_ROOT
from tests.helpers.tool_runs import run


def _result(name, fixed_mb, per_sample_mb, eval_fixed=100.0, eval_per=10.0):
    result = MemoryResult(name, 1000, 'cuda plan', 'cpu')
    result.fits = dict(train=LinearFit(fixed_mb * MB, per_sample_mb * MB),
                       eval=LinearFit(eval_fixed * MB, eval_per * MB))
    return result


def test_linear_fit_through_two_points():
    fit = LinearFit.through({2: 300.0, 4: 500.0})
    assert (fit.fixed, fit.per_sample, fit.at(128)) == (100.0, 100.0, 12900.0)
    assert fit.largest_batch(1000.0) == 9


def test_batch_that_does_not_fit_says_by_how_much_and_the_override():
    result = _result('kw1x-resnet50_8xb512-300e_in1k', 1000, 100)
    assert fit_verdict(result, 128, 24 * 1024 * MB) is None
    line = fit_verdict(result, 512, 24 * 1024 * MB)
    assert line == ('kw1x-resnet50_8xb512-300e_in1k: batch 512 per GPU does not fit a 24,576 '
                    'MB GPU: it needs about 52,200 MB, 27,624 MB more; the largest batch that '
                    'fits is 235; keep the total batch with --cfg-options '
                    'train_dataloader.batch_size=128 optim_wrapper.accumulative_counts=4')


def test_config_note_states_the_config_batch_and_the_small_gpu_override():
    result = _result('kw1x-resnet50_8xb512-300e_in1k', 1024, 100)
    assert config_note(result, 512).splitlines() == [
        CONFIG_NOTE_HEAD,
        "#   51.0 GB at this config's 512 images per GPU; 13.5 GB at 128",
        '#   (cuda plan, tensors only).']
    assert '; ' not in config_note(result, 32).splitlines()[1]


def test_annotate_config_replaces_its_own_note_only(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text("_base_ = 'x.py'\n# other comment\n#   indented comment\n")
    annotate_config(str(path), config_note(_result('m', 1024, 100), 512))
    annotate_config(str(path), config_note(_result('m', 1024, 10), 512))
    lines = path.read_text().splitlines()
    assert lines[:3] == ["_base_ = 'x.py'", '# other comment', '#   indented comment']
    assert lines.count(CONFIG_NOTE_HEAD) == 1
    assert lines[-2].startswith("#   6.0 GB at this config's 512")


def test_config_memory_notes_are_the_tools():
    """Every memory note in a config is the form `tools/analysis/memory.py --annotate` writes
    (at the config's own batch, plus 128 where the config's batch is larger)."""
    noted = 0
    for path in sorted(glob.glob(osp.join(REPO_ROOT, 'configs', '*.py'))):
        with open(path) as f:
            lines = f.read().splitlines()
        if CONFIG_NOTE_HEAD not in lines:
            continue
        noted += 1
        start = lines.index(CONFIG_NOTE_HEAD)
        note, source = lines[start + 1:start + 3]
        assert re.fullmatch(r"#   \d+\.\d GB at this config's (\d+) images per GPU"
                            r"(; \d+\.\d GB at 128)?", note), (path, note)
        assert re.fullmatch(r'#   \(.* plan.*, tensors only\)\.', source), (path, source)
        assert all(len(line) <= 100 for line in lines[start:start + 3]), path
        batch = int(re.search(r"config's (\d+) images", note).group(1))
        assert ('GB at 128' in note) == (batch > 128), (path, note)
    assert noted > 0


@pytest.mark.parametrize('config', sorted(
    osp.basename(p) for p in glob.glob(osp.join(REPO_ROOT, 'configs', '*300e_in1k.py'))))
def test_every_300_epoch_config_states_its_memory(config):
    """Their 512 images per GPU exceed most GPUs: each states what it needs."""
    with open(osp.join(REPO_ROOT, 'configs', config)) as f:
        assert CONFIG_NOTE_HEAD in f.read().splitlines(), (
            f'{config}: no memory note; run tools/analysis/memory.py configs/{config} '
            '--device cuda --annotate')


@pytest.mark.parametrize('text,mb', [('24GB', 24576), ('24576MB', 24576), ('16', 16384),
                                     ('1.5GiB', 1536)])
def test_gpu_memory_sizes(text, mb):
    assert parse_memory(text) == mb * MB


@pytest.mark.parametrize('text', ['lots', '-3GB', '0'])
def test_bad_gpu_memory(text):
    with pytest.raises(ValueError, match=f'--gpu-memory must be a size such as 24GB, 24576MB '
                       f'or 24, got {text!r}'):
        parse_memory(text)


def test_table_beside_the_paper():
    results = [_result('resnet50_8xb512-300e_in1k', 100, 50),
               _result('kw1x-resnet50_8xb512-300e_in1k', 150, 60, 150, 12)]
    table = format_table(results, {r.name: 512 for r in results}, header='machine',
                         markdown=True)
    lines = table.splitlines()
    assert lines[0] == 'machine'
    kw = [line for line in lines if line.startswith('| kw1x')][0].split(' | ')
    # train at the paper's 128: 150 + 60 * 128 = 7830 MB, plain 6500 MB: 1.20x; paper 2.10x
    assert kw[3:7] == ['7,830', '1.20x', f'{PAPER_TABLE16[results[1].name][0]:,}', '2.10x']
    assert kw[7:11] == ['1,350', '1.23x', '2,200', '1.76x']


def test_planning_without_the_planner_says_so():
    context, plan = planning_context('cpu', 'cpu')
    assert plan == 'cpu plan'
    _, plan = planning_context('cuda', 'cpu')
    assert plan in ('cuda plan, measured on cpu',
                    'cpu plan (kw_mm.cnn.plan.planning_as is not available: the cuda plan '
                    'could not be measured)')


def test_measured_on_this_cpu():
    result = measure_memory('configs/kw1x-resnet18_8xb32_in1k.py', (2, 3), size=32,
                            log=lambda text: None)
    weights = result.params * 4
    assert result.persistent['eval'] >= weights
    assert result.persistent['train'] > result.persistent['eval']  # AdamW / SGD state
    # at 32 px the largest buffer of a step may be one that does not grow with the batch
    # (a warehouse's gradient): the peaks never shrink with it
    for mode in ('train', 'eval'):
        assert result.peaks[mode][3] >= result.peaks[mode][2] > 0
    assert result.fits['train'].per_sample >= 0
    # a training step keeps activations and gradients: more than inference
    assert result.total('train', 2) > result.total('eval', 2)


@pytest.mark.slow
def test_tool_says_a_batch_does_not_fit(tmp_path):
    out = tmp_path / 'memory.md'
    proc = run([sys.executable, 'tools/analysis/memory.py', 'configs/resnet18_8xb32_in1k.py',
                '--batch', '64', '--size', '32', '--measure-batches', '2', '3',
                '--gpu-memory', '60MB', '--markdown', str(out)])
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith('resnet18_8xb32_in1k: batch 64 per GPU does not fit a 60 MB '
                                'GPU: it needs about ')
    assert 'memory per GPU, measured on cpu' in out.read_text()
    assert '| resnet18_8xb32_in1k |' in out.read_text()
