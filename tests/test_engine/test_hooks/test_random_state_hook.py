"""RandomStateHook: random states in checkpoints, restored on resume (real mmengine Runner)."""
import random

import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from kw_mm.engine.hooks.random_state_hook import (CHECKPOINT_KEY, capture_random_states,
                                                  restore_random_states, seed_worker)
from kw_mm.runner.launch import use_safe_checkpoint_loader

from tests.helpers.tiny_runner import TinyKWNet, TinySet


class AugmentedSet(TinySet):
    """TinySet with an "augmentation" from the global NumPy, Python and torch generators."""

    def __getitem__(self, idx):
        item = super().__getitem__(idx)
        noise = np.random.uniform(-1, 1) + random.random() + float(torch.rand(()))
        item['inputs'] = item['inputs'] + noise
        return item


def make_runner(work_dir, hook: bool, resume_from=None, max_epochs=3):
    name = f'{work_dir.parent.name}_{work_dir.name}'
    loader = dict(dataset=AugmentedSet(8), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True),
                  collate_fn=dict(type='pseudo_collate'))
    return Runner(
        model=TinyKWNet(), work_dir=str(work_dir), train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=[dict(type='kw_mm.RandomStateHook')] if hook else None,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        experiment_name=name, resume=resume_from is not None, load_from=resume_from,
        randomness=dict(seed=0, deterministic=True), default_scope='mmengine')


def test_states_round_trip_through_a_safe_checkpoint(tmp_path):
    use_safe_checkpoint_loader()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # a cached Gaussian is part of NumPy's state
    states = capture_random_states()
    torch.save(states, tmp_path / 's.pth')
    loaded = torch.load(tmp_path / 's.pth', weights_only=True)
    expected = (random.random(), np.random.normal(), float(torch.rand(())))
    restore_random_states(loaded)
    assert (random.random(), np.random.normal(), float(torch.rand(()))) == expected


def test_worker_seeds_follow_the_epoch():
    def drawn(**kw):
        seed_worker(**kw)
        return random.random(), np.random.random(), float(torch.rand(()))

    base = dict(worker_id=1, num_workers=2, rank=0, world_size=2, seed=0)
    assert drawn(epoch=3, **base) == drawn(epoch=3, **base)
    assert drawn(epoch=3, **base) != drawn(epoch=4, **base)
    seeds = set()
    for epoch in range(3):
        for rank in range(2):
            for worker in range(2):
                seeds.add(drawn(worker_id=worker, num_workers=2, rank=rank, world_size=2,
                                seed=0, epoch=epoch))
    assert len(seeds) == 12  # no two workers of the run share a seed


@pytest.mark.parametrize('hook', [True, False])
def test_resume_is_bit_exact_only_with_the_hook(tmp_path, hook):
    use_safe_checkpoint_loader()
    full = make_runner(tmp_path / 'full', hook)
    full.train()
    resumed = make_runner(tmp_path / 'resumed', hook,
                          resume_from=str(tmp_path / 'full' / 'epoch_1.pth'))
    resumed.train()
    same = [torch.equal(a, b) for a, b in zip(full.model.state_dict().values(),
                                               resumed.model.state_dict().values())]
    # mmengine alone re-seeds on resume: epochs 2 and 3 draw other augmentations
    assert all(same) if hook else not all(same)
    ckpt = torch.load(tmp_path / 'full' / 'epoch_1.pth', weights_only=True)
    assert (CHECKPOINT_KEY in ckpt) == hook
    if hook:
        assert ckpt[CHECKPOINT_KEY]['at_epoch_end'] and len(ckpt[CHECKPOINT_KEY]['per_rank']) == 1
