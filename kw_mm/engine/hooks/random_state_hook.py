"""Random states in checkpoints, so that a resumed run continues bit for bit.

What mmengine 0.10.7 does by itself (``Runner``, ``DefaultSampler``, ``worker_init_fn``):

- ``randomness.seed`` seeds Python, NumPy and torch once, when the Runner is built, and again
  with the same seed when a run is resumed (``Runner.resume``): the resumed run continues from
  the *seed*, not from the state the interrupted run had reached, so every random augmentation
  drawn in the main process (``num_workers=0``) differs after a resume.
- ``DefaultSampler`` shuffles with a generator seeded ``seed + epoch`` at each epoch: the order
  of the samples is restored exactly (the epoch is in the checkpoint).
- Data loader workers are seeded by ``default_worker_init_fn`` with
  ``seed + rank * num_workers + worker_id``: the same seed in every epoch (every epoch draws the
  same augmentations) and nothing that depends on the main process's state. Each
  ``iter(dataloader)`` also draws the workers' base seed from the main process's torch
  generator, including the validation loader's, so validation shifts the training stream.
- Nothing of the random states is written into checkpoints.

:class:`RandomStateHook` closes the gap: at the end of every training epoch it records the
Python, NumPy and torch states of every process (gathered to the checkpoint in distributed
runs), and at the start of every training epoch it puts them back, in the uninterrupted run
(validation in between no longer shifts training) and in a resumed one (from the checkpoint)
alike. Workers get a seed that follows the epoch (``seed + rank * num_workers + worker_id``
plus ``epoch * world_size * num_workers``), so each epoch draws new augmentations and a resumed
epoch draws the same ones.
"""
import logging
import random
from functools import partial
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log

from kw_mm.registry import HOOKS

#: Key of the random states in a Runner checkpoint.
CHECKPOINT_KEY = 'random_states'


def capture_random_states() -> Dict[str, Any]:
    """The Python, NumPy and torch (CPU, and CUDA if present) generator states of this process,
    as tensors and plain Python values (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    states = dict(
        python=dict(version=version, state=torch.tensor(internal, dtype=torch.int64),
                    gauss=gauss),
        numpy=dict(bit_generator=np_state['bit_generator'],
                   key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                   pos=int(np_state['state']['pos']), has_gauss=int(np_state['has_gauss']),
                   gauss=float(np_state['gauss'])),
        torch=torch.get_rng_state())
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: Dict[str, Any]) -> None:
    """Set the generators of this process to ``states`` (:func:`capture_random_states`)."""
    py = states['python']
    random.setstate((py['version'], tuple(int(v) for v in py['state'].tolist()), py['gauss']))
    npy = states['numpy']
    np.random.set_state(dict(
        bit_generator=npy['bit_generator'],
        state=dict(key=npy['key'].numpy().astype(np.uint32), pos=npy['pos']),
        has_gauss=npy['has_gauss'], gauss=npy['gauss']))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def seed_worker(worker_id: int, num_workers: int, rank: int, world_size: int, seed: int,
                epoch: int) -> None:
    """``worker_init_fn`` of the training loader: a seed per (epoch, rank, worker).

    mmengine's ``default_worker_init_fn`` seed plus ``epoch * world_size * num_workers``, so no
    two workers of a run share a seed and every epoch draws new augmentations.
    """
    worker_seed = (seed + (epoch * world_size + rank) * num_workers + worker_id) % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
    torch.manual_seed(worker_seed)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Store the random states in every checkpoint and restore them on resume.

    With it, a run killed after any epoch checkpoint and resumed (``tools/train.py --resume``)
    ends with the same weights and metrics, bit for bit, as the uninterrupted run (on the same
    machine and number of processes, with ``randomness.seed`` set; ``deterministic=True`` for
    GPU kernels). ``tools/train.py`` adds it to every run. See the module docstring for what
    mmengine does and does not restore by itself.

    Resuming from a checkpoint saved in the middle of an epoch (``by_epoch=False``) is not
    exact: mmengine's epoch loop restarts the epoch. Persistent data loader workers keep their
    generators across epochs, out of reach of the main process; their states are not restored
    (a warning says so).
    """

    priority = 'VERY_HIGH'  # records the states before anything else runs after an epoch

    def __init__(self) -> None:
        self._epoch_end_states: Optional[Dict[str, Any]] = None  # of this process
        self._gathered: Optional[List[Dict[str, Any]]] = None  # of every process, rank order
        self._warned_persistent = False

    # ------------------------------------------------------------------ training
    def before_train_epoch(self, runner) -> None:
        self._gathered = None  # the states of an epoch end are stored by that epoch's saves
        if self._epoch_end_states is not None:
            restore_random_states(self._epoch_end_states)
        self._seed_workers(runner)

    def after_train_epoch(self, runner) -> None:
        self._epoch_end_states = capture_random_states()
        # Every process runs this hook, but only rank 0 saves checkpoints (and runs
        # before_save_checkpoint): gather all ranks' states here, where all take part.
        self._gathered = all_gather_object(self._epoch_end_states) if get_world_size() > 1 \
            else [self._epoch_end_states]

    def _seed_workers(self, runner) -> None:
        loader = runner.train_dataloader
        if not getattr(loader, 'num_workers', 0) or runner.seed is None:
            return
        if loader.persistent_workers:
            if not self._warned_persistent:
                self._warned_persistent = True
                print_log('RandomStateHook: persistent_workers=True keeps the data loader '
                          "workers' random states across epochs, where a checkpoint cannot "
                          'reach them: a resumed run draws other augmentations. Set '
                          'persistent_workers=False for bit-exact resume.',
                          logger='current', level=logging.WARNING)
            return
        # DataLoader allows a new worker_init_fn between epochs (it is read by each iter()).
        loader.worker_init_fn = partial(seed_worker, num_workers=loader.num_workers,
                                        rank=get_rank(), world_size=get_world_size(),
                                        seed=runner.seed, epoch=runner.epoch)

    # ------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Runner.save_checkpoint runs on rank 0 only: no collective may happen here.
        at_epoch_end = checkpoint.get('meta', {}).get('epoch') == runner.epoch + 1 and \
            self._gathered is not None
        per_rank: List[Dict[str, Any]] = self._gathered if at_epoch_end \
            else [capture_random_states()]  # inside an epoch: rank 0's own (not exact anyway)
        checkpoint[CHECKPOINT_KEY] = dict(at_epoch_end=at_epoch_end, per_rank=per_rank)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY)
        if stored is None or not getattr(runner, '_resume', False):
            return  # loading weights (load_from, fine-tuning): the run's own seed stands
        per_rank = stored['per_rank']
        rank, world_size = get_rank(), get_world_size()
        if len(per_rank) != world_size:
            print_log(f'RandomStateHook: the checkpoint holds the random states of '
                      f'{len(per_rank)} processes, this run has {world_size}: each process '
                      'continues from the seed, not bit-exact', logger='current',
                      level=logging.WARNING)
            return
        if not stored['at_epoch_end']:
            print_log('RandomStateHook: the checkpoint was saved inside an epoch; mmengine '
                      'restarts the epoch, so the resumed run is not bit-exact',
                      logger='current', level=logging.WARNING)
        self._epoch_end_states = per_rank[rank]
