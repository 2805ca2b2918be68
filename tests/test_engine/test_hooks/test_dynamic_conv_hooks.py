"""The DY-Conv / ODConv members of the temperature hook family with a tiny real Runner: the
30 -> 1 anneal of the ODConv release, its log, evaluation at 1, and fine-tuning at 1."""
import glob
import json

import pytest
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from kw_mm.cnn.dynamic import set_softmax_temperature
from kw_mm.engine import DynamicConvFinetuneHook, DynamicConvTemperatureHook, KWTemperatureHook

from tests.helpers.tiny_runner import CountMetric, TinyDynamicNet, TinyKWNet, TinySet


def make_runner(work_dir, hooks, model=None, max_epochs=3):
    name = f'{work_dir.parent.name}_{work_dir.name}'
    loader = dict(dataset=TinySet(8), batch_size=2, num_workers=0,  # 4 iterations per epoch
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='pseudo_collate'))
    return Runner(
        model=model or TinyDynamicNet(), work_dir=str(work_dir), train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        val_dataloader=dict(loader), val_cfg=dict(), val_evaluator=[CountMetric()],
        custom_hooks=hooks, default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')],
                        name=f'vis_{name}'),
        experiment_name=name, randomness=dict(seed=0), default_scope='mmengine')


def calls(runner, mode):
    return [t for m, t, _ in runner.model.calls if m == mode]


def odconv_release(i, anneal_iters, start=30.0):
    """The ODConv release's get_temperature, c = iteration + 1."""
    return 1 + (start - 1) * max(0, (anneal_iters - (i + 1)) / anneal_iters)


def test_anneal_30_to_1_logged_and_validated(tmp_path):
    runner = make_runner(tmp_path / 'run', [dict(type='kw_mm.DynamicConvTemperatureHook',
                                                 anneal_epochs=2)])
    runner.train()
    train = calls(runner, 'loss')
    assert train == pytest.approx([odconv_release(i, 8) for i in range(12)])
    assert train[0] == pytest.approx(26.375) and train[3] == pytest.approx(15.5)
    assert set(train[7:]) == {1.0}
    val = calls(runner, 'predict')
    assert val[:4] == pytest.approx([15.5] * 4) and set(val[4:]) == {1.0}
    files = glob.glob(str(tmp_path / 'run' / '*' / 'vis_data' / 'scalars.json'))
    rows = [json.loads(line) for line in open(files[0])]
    logged = [r['softmax_temperature'] for r in rows if 'loss' in r]
    assert logged == pytest.approx(train)


def test_custom_range_and_bad_arguments():
    hook = HOOKS.build(dict(type='kw_mm.DynamicConvTemperatureHook', anneal_epochs=5, start=34))
    assert isinstance(hook, DynamicConvTemperatureHook) and isinstance(hook, KWTemperatureHook)
    assert (hook.start, hook.end, hook.schedule(0.5)) == (34.0, 1.0, 17.5)
    for kwargs, message in ((dict(start=0.5), r'start \(0.5\) must be >= end'),
                            (dict(end=0), 'end must be a finite temperature > 0'),
                            (dict(anneal_epochs=0), 'must be > 0')):
        with pytest.raises(ValueError, match=message):
            DynamicConvTemperatureHook(**kwargs)


def test_a_kw_hook_does_not_touch_dynamic_layers_and_vice_versa(tmp_path):
    runner = make_runner(tmp_path / 'kw', [dict(type='kw_mm.KWTemperatureHook',
                                                anneal_epochs=1)], max_epochs=1)
    runner.train()
    assert set(calls(runner, 'loss')) == {1.0}  # the layers' default, untouched
    runner = make_runner(tmp_path / 'dyn', [dict(type='kw_mm.DynamicConvTemperatureHook',
                                                 anneal_epochs=1)], TinyKWNet(), max_epochs=1)
    runner.train()
    assert set(calls(runner, 'loss')) == {0.0}  # KW's default, untouched


def test_finetune_hook_holds_t_at_1(tmp_path):
    model = TinyDynamicNet()
    set_softmax_temperature(model, 30.0)  # as if something left a pretraining value behind
    runner = make_runner(tmp_path / 'ft', [dict(type='kw_mm.DynamicConvFinetuneHook')], model,
                         max_epochs=1)
    runner.train()
    assert set(calls(runner, 'loss')) == {1.0} and set(calls(runner, 'predict')) == {1.0}
    assert any(isinstance(h, DynamicConvFinetuneHook) for h in runner.hooks)


def test_finetune_hook_refuses_the_anneal_hook(tmp_path):
    runner = make_runner(tmp_path / 'both', [dict(type='kw_mm.DynamicConvFinetuneHook'),
                                             dict(type='kw_mm.DynamicConvTemperatureHook',
                                                  anneal_epochs=1)], max_epochs=1)
    with pytest.raises(ValueError, match='DynamicConvFinetuneHook keeps the temperature at 1'):
        runner.train()
