"""KWTemperatureHook with a tiny real mmengine Runner (no mocks)."""
import glob
import json

import pytest
import torch
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from kw_mm.engine import KWTemperatureHook, check_temperature_schedule
from kw_mm.engine.hooks.kw_temperature_hook import (checkpoint_temperature, temperature_at,
                                                    temperature_hook_in)
from kw_mm.runner.launch import use_safe_checkpoint_loader

from tests.helpers.tiny_runner import CountMetric, TinyKWNet, TinySet

SAMPLES = 8  # with batch 2: 4 iterations per epoch


def make_runner(work_dir, max_epochs=4, anneal_epochs=2, hooks=True, accumulate=1,
                resume_from=None, load_from=None, val=True, seed=0, checkpoint=None,
                allow_unfinished=False):
    # mmengine keeps loggers and visualizers by name: one name per run
    name = f'{work_dir.parent.name}_{work_dir.name}'
    loader = dict(dataset=TinySet(SAMPLES), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='pseudo_collate'))
    val_kwargs = dict(val_dataloader=dict(loader), val_cfg=dict(),
                      val_evaluator=[CountMetric()]) if val else {}
    return Runner(
        model=TinyKWNet(),
        work_dir=str(work_dir),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs, val_interval=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01),
                           accumulative_counts=accumulate),
        test_dataloader=dict(loader), test_cfg=dict(), test_evaluator=[CountMetric()],
        custom_hooks=[dict(type='kw_mm.KWTemperatureHook', anneal_epochs=anneal_epochs,
                           allow_unfinished_anneal=allow_unfinished)]
        if hooks else None,
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=checkpoint or dict(type='CheckpointHook', interval=1)),
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')],
                        name=f'vis_{name}'),
        experiment_name=name,
        resume=resume_from is not None,
        load_from=resume_from or load_from,
        randomness=dict(seed=seed),
        default_scope='mmengine',
        **val_kwargs)


def calls(runner, mode):
    return [t for m, t, _ in runner.model.calls if m == mode]


def expected(iters, anneal_iters):
    return [max(0.0, 1.0 - (i + 1) / anneal_iters) for i in iters]


def test_hook_registered_and_bad_anneal_epochs():
    hook = HOOKS.build(dict(type='kw_mm.KWTemperatureHook', anneal_epochs=10))
    assert isinstance(hook, KWTemperatureHook)
    for bad in (0, -1.5):
        with pytest.raises(ValueError, match=str(bad)):
            KWTemperatureHook(anneal_epochs=bad)
    with pytest.raises(TypeError, match="'ten'"):
        KWTemperatureHook(anneal_epochs='ten')
    assert temperature_at(0, 10, 100) == pytest.approx(1 - 1 / 1000)
    assert temperature_at(999, 10, 100) == 0.0 and temperature_at(5000, 10, 100) == 0.0


def test_sequence_start_middle_end_and_validation(tmp_path):
    runner = make_runner(tmp_path / 'run')
    runner.train()
    train = calls(runner, 'loss')
    assert len(train) == 16  # 4 epochs x 4 iterations
    assert train == pytest.approx(expected(range(16), 8))
    assert train[0] == pytest.approx(0.875)  # start: t < 1 from the first update
    assert train[3] == pytest.approx(0.5)  # middle of the anneal (end of epoch 1 of 2)
    assert train[7] == 0.0 and set(train[7:]) == {0.0}  # end of the anneal: stays 0
    # validation after each epoch uses the temperature of the last training iteration
    val = calls(runner, 'predict')
    assert val[:4] == pytest.approx([0.5] * 4)  # 4 val batches after epoch 1
    assert set(val[4:]) == {0.0}
    # every training iteration logged its temperature in the message hub
    history = runner.message_hub.get_scalar('train/kw_temperature').data[0]
    assert list(history) == pytest.approx(train)


def test_scalars_json_has_temperature_next_to_loss(tmp_path):
    runner = make_runner(tmp_path / 'run', max_epochs=1, val=False, allow_unfinished=True)
    runner.train()
    files = glob.glob(str(tmp_path / 'run' / '*' / 'vis_data' / 'scalars.json'))
    assert len(files) == 1
    rows = [json.loads(line) for line in open(files[0])]
    train_rows = [r for r in rows if 'loss' in r]
    assert [r['iter'] for r in train_rows] == [1, 2, 3, 4]
    assert [r['kw_temperature'] for r in train_rows] == pytest.approx(expected(range(4), 8))


def test_resume_mid_anneal_continues_exact_sequence(tmp_path):
    use_safe_checkpoint_loader()  # torch weights_only=True with mmengine's metadata allowed
    full = make_runner(tmp_path / 'full', max_epochs=3, anneal_epochs=2.5)
    full.train()
    reference = calls(full, 'loss')
    assert reference == pytest.approx(expected(range(12), 10))

    ckpt = tmp_path / 'full' / 'epoch_1.pth'  # after iteration 4 of 10 anneal iterations
    resumed = make_runner(tmp_path / 'resumed', max_epochs=3, anneal_epochs=2.5,
                          resume_from=str(ckpt))
    resumed.train()
    assert resumed.iter == 12
    assert calls(resumed, 'loss') == pytest.approx(reference[4:])
    assert calls(resumed, 'predict') == pytest.approx(calls(full, 'predict')[4:])


def test_anneal_longer_than_the_run_is_refused_at_start(tmp_path):
    """T = 3 epochs in a 2-epoch run would train (and save) a model that only works at
    t = 1/3: refused before the first iteration, unless allowed on purpose."""
    runner = make_runner(tmp_path / 'refused', max_epochs=2, anneal_epochs=3, val=False)
    with pytest.raises(ValueError, match=r'over 3 epochs but the run has max_epochs=2: it would '
                                         r'end at t = 0.333333'):
        runner.train()
    assert calls(runner, 'loss') == []
    allowed = make_runner(tmp_path / 'allowed', max_epochs=2, anneal_epochs=3, val=False,
                          allow_unfinished=True)
    allowed.train()
    assert calls(allowed, 'loss')[-1] == pytest.approx(1 - 8 / 12)
    log = open(glob.glob(str(tmp_path / 'allowed' / '*' / '*.log'))[0]).read()
    assert 'WARNING' in log and 'it would end at t = 0.333333' in log and '(allowed)' in log
    # exactly as long as the run: accepted without a word
    fits = make_runner(tmp_path / 'fits', max_epochs=2, anneal_epochs=2, val=False)
    fits.train()
    assert calls(fits, 'loss')[-1] == 0.0


def test_gradient_accumulation_keeps_the_schedule(tmp_path):
    runner = make_runner(tmp_path / 'acc', max_epochs=3, accumulate=2)
    runner.train()
    # runner.iter counts data batches (mmengine 0.10.7: the optimizer steps every 2 batches)
    assert runner.iter == 12
    assert calls(runner, 'loss') == pytest.approx(expected(range(12), 8))


def test_evaluating_a_checkpoint_derives_its_temperature(tmp_path):
    """tools/test.py's path: the Runner loads a checkpoint and tests it at the t of the
    checkpoint's last training iteration, derived from its iteration count and the config's
    hook; the checkpoint itself holds no temperature."""
    use_safe_checkpoint_loader()
    trainer = make_runner(tmp_path / 'train', max_epochs=2, anneal_epochs=4,
                          allow_unfinished=True)
    trainer.train()
    train_t, val_t = calls(trainer, 'loss'), calls(trainer, 'predict')
    for epoch in (1, 2):
        ckpt = torch.load(tmp_path / 'train' / f'epoch_{epoch}.pth', weights_only=True)
        assert not any('temperature' in key for key in ckpt['meta'])
        # The same value as the run's last iteration before the save and its validation.
        derived = checkpoint_temperature(ckpt, 4)
        assert derived == pytest.approx(train_t[4 * epoch - 1])
        assert derived == pytest.approx(val_t[4 * epoch - 1])
    assert [checkpoint_temperature(torch.load(tmp_path / 'train' / f'epoch_{e}.pth',
                                              weights_only=True), 4) for e in (1, 2)] == \
        pytest.approx([0.75, 0.5])  # 1 - 4 / 16, 1 - 8 / 16
    tester = make_runner(tmp_path / 'test', load_from=str(tmp_path / 'train' / 'epoch_1.pth'),
                         anneal_epochs=4)
    tester.test()
    assert calls(tester, 'predict') == pytest.approx([0.75] * 4)
    tester = make_runner(tmp_path / 'test2', load_from=str(tmp_path / 'train' / 'epoch_2.pth'),
                         anneal_epochs=4)
    tester.test()
    assert calls(tester, 'predict') == pytest.approx([0.5] * 4)
    log = open(glob.glob(str(tmp_path / 'test2' / '*' / '*.log'))[0]).read()
    assert "evaluating at t = 0.5 (the loaded checkpoint's last training iteration" in log
    # The schedule is the evaluating config's: with T = 8 epochs, epoch 1 is at 1 - 4 / 32.
    tester = make_runner(tmp_path / 'test3', load_from=str(tmp_path / 'train' / 'epoch_1.pth'),
                         anneal_epochs=8)
    tester.test()
    assert calls(tester, 'predict') == pytest.approx([0.875] * 4)
    # A checkpoint that is not a training run's (a released state dict) is the trained model.
    ckpt = torch.load(tmp_path / 'train' / 'epoch_1.pth', weights_only=True)
    torch.save(ckpt['state_dict'], tmp_path / 'weights.pth')
    tester = make_runner(tmp_path / 'test4', load_from=str(tmp_path / 'weights.pth'),
                         anneal_epochs=4)
    tester.test()
    assert calls(tester, 'predict') == [0.0] * 4


def test_iteration_checkpoints_derive_their_temperature(tmp_path):
    """Checkpoints saved every 3 iterations (mid-epoch): the t of the iteration just run."""
    use_safe_checkpoint_loader()
    trainer = make_runner(tmp_path / 'train', max_epochs=2, anneal_epochs=2, val=False,
                          checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False))
    trainer.train()
    train_t = calls(trainer, 'loss')
    for it in (3, 6):
        ckpt = torch.load(tmp_path / 'train' / f'iter_{it}.pth', weights_only=True)
        assert ckpt['meta']['iter'] == it
        assert checkpoint_temperature(ckpt, 2) == pytest.approx(train_t[it - 1])
    assert checkpoint_temperature(torch.load(tmp_path / 'train' / 'iter_3.pth',
                                             weights_only=True), 2) == pytest.approx(0.625)


def test_checkpoint_temperature_needs_a_training_run():
    hub = dict(runtime_info=dict(max_iters=40, max_epochs=4))
    assert checkpoint_temperature(dict(meta=dict(iter=5), message_hub=hub), 2) == \
        pytest.approx(1 - 5 / 20)
    assert checkpoint_temperature(dict(meta=dict(iter=0), message_hub=hub), 2) == 1.0
    assert checkpoint_temperature(dict(meta=dict(iter=30), message_hub=hub), 2) == 0.0
    for not_a_run in (dict(meta=dict(iter=5)), dict(message_hub=hub), {'conv.weight': 0},
                      dict(meta=dict(iter=5), message_hub=dict(runtime_info={})), None):
        assert checkpoint_temperature(not_a_run, 2) is None


def test_temperature_hook_in_a_config():
    hook = temperature_hook_in(dict(custom_hooks=[
        dict(type='EMAHook'), dict(type='kw_mm.KWTemperatureHook', anneal_epochs=20,
                                   priority='NORMAL')]))
    assert isinstance(hook, KWTemperatureHook) and hook.anneal_epochs == 20
    assert temperature_hook_in(dict(custom_hooks=[dict(type='kw_mm.KWFinetuneHook')])) is None
    assert temperature_hook_in(dict()) is None


def test_warning_without_hook(tmp_path):
    assert check_temperature_schedule(make_runner(tmp_path / 'a', hooks=False, val=False))
    log = open(glob.glob(str(tmp_path / 'a' / '*' / '*.log'))[0]).read()
    assert 'WARNING' in log and 'is trained from scratch without a temperature schedule' in log
    assert not check_temperature_schedule(make_runner(tmp_path / 'b', val=False))
    # fine-tuning from a checkpoint (load_from) is not "from scratch": no warning
    weights = str(tmp_path / 'weights.pth')
    torch.save(TinyKWNet().state_dict(), weights)
    assert not check_temperature_schedule(
        make_runner(tmp_path / 'c', hooks=False, val=False, load_from=weights))


def test_train_py_runs_the_schedule_check():
    """tools/train.py calls the check on the built Runner (a hook cannot warn about its own
    absence)."""
    import os.path as osp

    from tests.helpers import REPO_ROOT
    source = open(osp.join(REPO_ROOT, 'tools', 'train.py')).read()
    assert 'check_temperature_schedule(runner)' in source.split('def main')[1]
