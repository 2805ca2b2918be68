"""KWFinetuneHook with a tiny real mmengine Runner: t = 0 everywhere, beta never in the forward."""
import glob

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.runner import Runner

from kw_mm.cnn import KWAttention, set_temperature
from kw_mm.engine import KWFinetuneHook
from kw_mm.registry import HOOKS

from tests.helpers.tiny_runner import CountMetric, TinyKWNet, TinySet

SAMPLES = 4  # batch 2: 2 iterations per epoch


def poisoned_model() -> TinyKWNet:
    """A model whose attentions start at t = 1 with a NaN beta: any use of beta shows."""
    model = TinyKWNet()
    set_temperature(model, 1.0)
    for m in model.modules():
        if isinstance(m, KWAttention):
            m.beta.fill_(float('nan'))
    return model


def make_runner(tmp_path, model, hooks):
    loader = dict(dataset=TinySet(SAMPLES), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='pseudo_collate'))
    return Runner(
        model=model, work_dir=str(tmp_path), experiment_name=f'finetune_{tmp_path.name}',
        train_dataloader=loader, val_dataloader=dict(loader), test_dataloader=dict(loader),
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1),
        val_cfg=dict(), test_cfg=dict(),
        val_evaluator=[CountMetric()], test_evaluator=[CountMetric()],
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=hooks,
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=10)))


def test_hook_is_registered_in_kw_mm_scope():
    assert HOOKS.get('KWFinetuneHook') is KWFinetuneHook
    hook = HOOKS.build(dict(type='kw_mm.KWFinetuneHook'))
    assert isinstance(hook, KWFinetuneHook)


def test_finetune_hook_keeps_t_zero_and_beta_out_of_forward(tmp_path):
    model = poisoned_model()
    # without the hook the poisoned beta reaches the forward pass: the check can fail
    model([torch.randn(3, 8, 8)], mode='predict')
    assert model.calls[-1] == ('predict', 1.0, False)
    model.calls.clear()

    runner = make_runner(tmp_path, model, [dict(type='kw_mm.KWFinetuneHook')])
    runner.train()
    runner.test()
    modes = [c[0] for c in model.calls]
    assert modes.count('loss') == 4 and modes.count('predict') == 2 * 2 + 2
    assert all(t == 0.0 for _, t, _ in model.calls)
    assert all(finite for _, _, finite in model.calls)
    # beta is still there (the attention initialization is not destroyed, only unused)
    assert all(torch.isnan(m.beta).all() for m in model.modules() if isinstance(m, KWAttention))
    log = open(glob.glob(str(tmp_path / '*' / '*.log'))[0]).read()
    assert log.count('KWFinetuneHook: KernelWarehouse attention initialization disabled') == 1
    assert 'temperature t = 0 on 2 KW attentions of TinyKWNet' in log


def test_finetune_hook_resets_t_every_iteration(tmp_path):
    """Whatever changes t between iterations (a checkpoint, user code), t is 0 in the step."""

    model = poisoned_model()
    runner = make_runner(tmp_path, model, [dict(type='kw_mm.KWFinetuneHook')])

    from mmengine.hooks import Hook

    class SetsTemperature(Hook):
        priority = 'LOWEST'  # runs after KWFinetuneHook in every stage

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            set_temperature(runner.model, 1.0)

    runner.register_hook(SetsTemperature())
    runner.train()
    assert [t for mode, t, _ in model.calls if mode == 'loss'] == [0.0] * 4
    assert all(t == 0.0 for _, t, _ in model.calls)


def test_finetune_hook_test_only_run(tmp_path):
    """tools/test.py runs only runner.test(): the hook sets t = 0 there too."""
    model = poisoned_model()
    runner = make_runner(tmp_path, model, [dict(type='kw_mm.KWFinetuneHook')])
    runner.test()
    assert model.calls and all(t == 0.0 and finite for _, t, finite in model.calls)


def test_finetune_hook_without_kw_layers(tmp_path):

    class Plain(TinyKWNet):

        def __init__(self):
            BaseModel.__init__(self)
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            logits = self.conv(torch.stack(inputs)).mean(dim=(2, 3))
            if mode == 'loss':
                return dict(loss=F.cross_entropy(logits, torch.as_tensor(data_samples)))
            return list(logits.argmax(dim=1))

    runner = make_runner(tmp_path, Plain(), [dict(type='kw_mm.KWFinetuneHook')])
    runner.train()
    log = open(glob.glob(str(tmp_path / '*' / '*.log'))[0]).read()
    assert 'KWFinetuneHook: Plain has no KernelWarehouse layer; nothing to do.' in log


def test_finetune_hook_refuses_temperature_schedule(tmp_path):
    runner = make_runner(tmp_path, poisoned_model(),
                         [dict(type='kw_mm.KWFinetuneHook'),
                          dict(type='kw_mm.KWTemperatureHook', anneal_epochs=1)])
    with pytest.raises(ValueError, match=r"also has \['KWTemperatureHook'\]"):
        runner.train()
