"""tools/train.py, tools/test.py and tools/dist_train.sh as a user runs them (subprocesses)."""
import glob
import json
import os
import os.path as osp
import re
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from kw_mm.engine.hooks.kw_temperature_hook import checkpoint_temperature
from kw_mm.demo_data.classification import write_classification_set
from kw_mm.runner.launch import (build_model, check_checkpoint_file, check_data_roots,
                                override_data_root, use_safe_checkpoint_loader)

from tests.helpers.tool_runs import ROOT, check, evaluate_top1, free_port, printed_top1, run


@pytest.fixture(scope='module')
def dist_run(tiny):
    """A 2-process training run through tools/dist_train.sh (gloo on CPUs)."""
    work_dir = tiny['tmp'] / 'dist'
    proc = run(['bash', 'tools/dist_train.sh', tiny['cfg'], '2', '--work-dir', str(work_dir)],
               PORT=str(free_port()))
    return dict(proc=proc, work_dir=work_dir)


@pytest.mark.slow  # starts a subprocess
def test_dist_train_two_processes_and_reload(tiny, dist_run):
    check(dist_run['proc'])
    work_dir = dist_run['work_dir']
    log = open(glob.glob(str(work_dir / '*' / '*.log'))[0]).read()
    # mmengine's environment summary: 2 processes ("GPU number" is its name for the world size)
    assert "dist_cfg: {'backend': 'gloo'}" in log and 'Distributed training: True' in log
    assert 'GPU number: 2' in log
    # the console shows what a person needs; the environment dump and the config are in the log
    out = dist_run['proc'].stdout
    assert 'System environment' in log and 'System environment' not in out
    assert f'environment and full config: in {work_dir}' in out
    header = (f'train: config {tiny["cfg"]}; work dir {work_dir}; 2 epochs; t anneals from 1 '
              'to 0 over 1 epochs; lr ')
    # then the lr used (the config's, or the one --auto-scale-lr computed) and the total batch
    assert any(line.startswith(header) for line in out.splitlines()), out
    assert re.search(r'^==== last validation of .*\ntop-1 accuracy \(%\): [0-9.]+$', out, re.M)
    # 8 training images, 2 processes x batch 2: 2 iterations per epoch, 2 epochs
    rows = [json.loads(line)
            for line in open(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))[0])]
    temps = [r['kw_temperature'] for r in rows if 'loss' in r]
    assert temps == pytest.approx([0.5, 0.0, 0.0, 0.0])  # T = 1 epoch of 2 iterations, DDP
    last = open(work_dir / 'last_checkpoint').read().strip()
    assert osp.basename(last) == 'epoch_2.pth'

    use_safe_checkpoint_loader()
    cfg = Config.fromfile(tiny['cfg'])
    model = build_model(cfg)
    checkpoint = load_checkpoint(model, last, map_location='cpu', strict=True)
    assert checkpoint['meta']['iter'] == 4
    # No temperature is stored; it follows from the iteration and the schedule, with the
    # epoch length of the 2-process run (2 iterations), not of a later 1-process evaluation.
    assert not any('temperature' in key for key in checkpoint['meta'])
    # the random states of both processes, gathered at the end of the epoch (rank 0 saves)
    states = checkpoint['random_states']
    assert states['at_epoch_end'] and len(states['per_rank']) == 2
    assert checkpoint_temperature(checkpoint, 1) == 0.0
    assert checkpoint_temperature(checkpoint, 4) == pytest.approx(1 - 4 / 8)
    for key, value in model.state_dict().items():
        assert torch.equal(value, checkpoint['state_dict'][key]), key


@pytest.mark.slow  # starts a subprocess
def test_test_py_evaluates_checkpoint(tiny, dist_run):
    check(dist_run['proc'])
    use_safe_checkpoint_loader()
    ckpt = open(dist_run['work_dir'] / 'last_checkpoint').read().strip()
    proc = check(run([sys.executable, 'tools/test.py', tiny['cfg'], ckpt, '--work-dir',
                      str(tiny['tmp'] / 'test')]))
    top1 = printed_top1(proc.stdout)
    # After the anneal (T = 1 epoch, the checkpoint is at epoch 2): t = 0.
    assert top1 == pytest.approx(evaluate_top1(tiny['cfg'], ckpt, 0.0), abs=0.005)
    # The training run validated the same checkpoint on the same images at its end.
    rows = [json.loads(line) for line in open(glob.glob(
        str(dist_run['work_dir'] / '*' / 'vis_data' / 'scalars.json'))[0])]
    last_val = [r for r in rows if 'accuracy/top1' in r][-1]
    assert (last_val['step'], top1) == (2, pytest.approx(last_val['accuracy/top1'], abs=0.005))

    # A command-line schedule other than the run's (T = 4 epochs would put this checkpoint,
    # iteration 4 of 2-iteration epochs, at t = 0.5): the checkpoint's stored config wins.
    proc = check(run([sys.executable, 'tools/test.py', tiny['cfg'], ckpt, '--work-dir',
                      str(tiny['tmp'] / 'test_t'), '--cfg-options',
                      'custom_hooks.0.anneal_epochs=4']))
    out = proc.stdout + proc.stderr
    assert (f"{ckpt} was trained with KWTemperatureHook(anneal_epochs=1) (t = 0 at its last "
            "iteration), the config says KWTemperatureHook(anneal_epochs=4): using the "
            "checkpoint's") in proc.stdout
    assert 'KWTemperatureHook: evaluating at t = 0 ' in out
    assert printed_top1(proc.stdout) == pytest.approx(top1, abs=0.005)


@pytest.mark.slow  # starts a subprocess
def test_train_py_resumes_from_a_checkpoint(tiny, dist_run):
    check(dist_run['proc'])
    work_dir = tiny['tmp'] / 'resume'
    # single process, from the distributed run's epoch 1 (t was 0.5 there), one more epoch
    proc = check(run([sys.executable, 'tools/train.py', tiny['cfg'], '--work-dir', str(work_dir),
                      '--resume', str(dist_run['work_dir'] / 'epoch_1.pth'),
                      '--verbose', '--cfg-options', 'train_cfg.max_epochs=2',
                      'train_dataloader.batch_size=4']))
    log = proc.stdout + proc.stderr
    assert 'System environment' in proc.stdout  # --verbose: mmengine's dump on the console
    assert 'resumed epoch: 1, iter: 2' in log
    rows = [json.loads(line)
            for line in open(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))[0])]
    temps = [r['kw_temperature'] for r in rows if 'loss' in r]
    # iterations 2 and 3 of a 2-iteration epoch schedule (T = 1): both after the anneal
    assert [r['iter'] for r in rows if 'loss' in r] == [3, 4]
    assert temps == pytest.approx([0.0, 0.0])


@pytest.mark.slow  # starts a subprocess
def test_clear_errors(tiny, tmp_path):
    use_safe_checkpoint_loader()
    model = nn.Linear(2, 2)
    not_ckpt = tmp_path / 'notes.pth'
    not_ckpt.write_text('this is not a checkpoint')
    with pytest.raises(ValueError, match=f'{not_ckpt} is not a loadable checkpoint'):
        load_checkpoint(model, str(not_ckpt))
    tensor = tmp_path / 'tensor.pth'
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=f'{tensor} is not a checkpoint: it holds a Tensor'):
        load_checkpoint(model, str(tensor))
    with pytest.raises(FileNotFoundError, match='missing.pth: not found'):
        check_checkpoint_file(str(tmp_path / 'missing.pth'))

    # through the command line: a missing data root is named before anything is built
    missing = str(tmp_path / 'no_such_data')
    proc = run([sys.executable, 'tools/train.py', tiny['cfg'], '--work-dir',
                str(tmp_path / 'w'), '--cfg-options', f'data_root={missing}'])
    assert proc.returncode != 0
    assert f"train_dataloader: data_root '{missing}' does not exist" in proc.stderr


class _Sneaky:
    """Pickles as getattr(HistoryBuffer, '__init__'): not a statistics method."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return getattr, (HistoryBuffer, '__init__')


def test_weights_only_loading_stays_safe(tmp_path):
    use_safe_checkpoint_loader()
    path = tmp_path / 'sneaky.pth'
    torch.save(dict(state_dict=dict(w=torch.zeros(1)), meta=dict(x=_Sneaky())), path)
    with pytest.raises(ValueError, match='refusing getattr'):
        load_checkpoint(nn.Linear(1, 1), str(path))


def test_data_root_override_reaches_every_dataset_and_evaluator():
    cfg = Config(dict(
        default_scope='mmdet',
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(
            type='CocoDataset', data_root='data/coco/', ann_file='annotations/train.json'))),
        val_dataloader=dict(dataset=dict(type='CocoDataset', data_root='data/coco/')),
        val_evaluator=dict(type='CocoMetric', ann_file='data/coco/annotations/val.json'),
        test_evaluator=[dict(type='CocoMetric', ann_file='data/coco/annotations/val.json')]))
    override_data_root(cfg, '/datasets/coco')
    assert cfg.train_dataloader.dataset.dataset.data_root == '/datasets/coco'
    assert cfg.train_dataloader.dataset.dataset.ann_file == 'annotations/train.json'
    assert cfg.val_dataloader.dataset.data_root == '/datasets/coco'
    assert cfg.val_evaluator.ann_file == '/datasets/coco/annotations/val.json'
    assert cfg.test_evaluator[0].ann_file == '/datasets/coco/annotations/val.json'
    with pytest.raises(FileNotFoundError, match="val_dataloader: data_root '/datasets/coco'"):
        check_data_roots(cfg, ['val_dataloader'])


def test_demo_classification_set_is_deterministic(tmp_path):
    """tools/make_demo_data.py's classification set: ImageNet folder layout, the same files for
    the same seed, other files for another seed."""
    from PIL import Image
    a = write_classification_set(str(tmp_path / 'a'), num_train=3, num_val=2, image_size=24)
    b = write_classification_set(str(tmp_path / 'b'), num_train=3, num_val=2, image_size=24)
    c = write_classification_set(str(tmp_path / 'c'), num_train=3, num_val=2, image_size=24,
                                 seed=1)
    classes = ['circle', 'cross', 'ring', 'square', 'stripes', 'triangle']
    for split, count in (('train', 3), ('val', 2)):
        assert sorted(os.listdir(a[split])) == classes
        for cls in classes:
            names = sorted(os.listdir(osp.join(a[split], cls)))
            assert names == [f'{cls}_{i:04d}.png' for i in range(count)]
            for name in names:
                data = open(osp.join(a[split], cls, name), 'rb').read()
                assert data == open(osp.join(b[split], cls, name), 'rb').read()
                assert data != open(osp.join(c[split], cls, name), 'rb').read()
                assert Image.open(osp.join(a[split], cls, name)).size == (24, 24)
    assert open(osp.join(a['data_root'], 'meta', 'classes.txt')).read().split() == classes


def test_imagenet_config_data_root_is_one_option(monkeypatch):
    """``--cfg-options data_root=PATH`` (as tools/train.py and tools/test.py apply it) moves
    every dataloader of a real ImageNet config."""
    import argparse
    # apply_runner_args sets LOCAL_RANK for mmengine; keep it out of the other tests
    monkeypatch.setenv('LOCAL_RANK', os.environ.get('LOCAL_RANK', '0'))
    from kw_mm.runner.launch import add_runner_args, apply_runner_args, dataset_roots
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    add_runner_args(parser)
    for config in ('kw1x-resnet18_8xb32_in1k.py', 'kw1x-resnet50_8xb512-300e_in1k.py',
                   'kw1x-mobilenet-v2_8xb32-150e_in1k.py'):
        path = osp.join(ROOT, 'configs', config)
        args = parser.parse_args([path, '--cfg-options', 'data_root=/datasets/in1k'])
        cfg = apply_runner_args(Config.fromfile(path), args)
        roots = dataset_roots(cfg)
        assert sorted(roots) == ['test_dataloader', 'train_dataloader', 'val_dataloader']
        assert all(r == ['/datasets/in1k'] for r in roots.values()), roots
