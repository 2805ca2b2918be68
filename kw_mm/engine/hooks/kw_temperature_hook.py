"""The temperature schedule of KernelWarehouse pretraining.

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024, appendix
A.1.1: "the temperature t linearly reduces from 1 to 0 in the first T epochs" (T = 10 for the
100-epoch recipes, 20 for the 300-epoch recipe). The reference trainer updates it every
iteration with ``t = max(0, 1 - (epoch * iters_per_epoch + step + 1) / (T * iters_per_epoch))``.
"""
import logging
import math
from typing import Optional, Union

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from kw_mm.cnn import set_temperature
from kw_mm.registry import HOOKS

DATA_BATCH = Optional[Union[dict, tuple, list]]
#: Key of the temperature in the run's scalars (``train/`` is dropped in the log and scalars.json).
SCALAR_KEY = 'train/kw_temperature'
#: Where a checkpoint records the temperature of its last training iteration.
META_KEY = 'kw_temperature'


def temperature_at(iteration: int, anneal_epochs: float, iters_per_epoch: int) -> float:
    """The temperature of training iteration ``iteration`` (0-based, counted in data batches).

    Args:
        iteration (int): ``runner.iter`` before the iteration runs.
        anneal_epochs (float): ``T``, the epochs over which t falls from 1 to 0.
        iters_per_epoch (int): Data batches per epoch (per process).

    Returns:
        float: ``max(0, 1 - (iteration + 1) / (T * iters_per_epoch))``.
    """
    return max(0.0, 1.0 - (iteration + 1) / (anneal_epochs * iters_per_epoch))


@HOOKS.register_module()
class KWTemperatureHook(Hook):
    """Anneal the temperature ``t`` of every KW attention from 1 to 0 over the first epochs.

    The hook keeps no schedule state: before every training iteration it computes
    ``t = max(0, 1 - (runner.iter + 1) / (anneal_epochs * iters_per_epoch))`` and writes it on the
    unwrapped model, so a resumed run continues the exact sequence and DDP needs nothing extra.
    ``runner.iter`` counts data batches, also under gradient accumulation
    (``optim_wrapper.accumulative_counts``: the optimizer steps every k batches, the loop still
    advances ``runner.iter`` by one per batch), which is what the reference trainer counts.

    Validation during training uses the temperature of the last training iteration; after the
    anneal ``t`` stays 0. Checkpoints record that temperature in ``meta['kw_temperature']``, and
    evaluating a loaded checkpoint (``tools/test.py``) uses it; a checkpoint without it (a
    released state dict) is evaluated at ``t = 0``, the trained model.

    Every training iteration writes ``kw_temperature`` to the run's scalars, so it is logged
    next to the loss and lands in ``vis_data/scalars.json``.

    Args:
        anneal_epochs (float): ``T``, the number of epochs over which ``t`` falls from 1 to 0
            (a fraction is allowed). Must be > 0.

    Example:
        >>> custom_hooks = [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=10)]
    """

    priority = 'NORMAL'

    def __init__(self, anneal_epochs: float) -> None:
        if isinstance(anneal_epochs, bool) or not isinstance(anneal_epochs, (int, float)):
            raise TypeError(f'anneal_epochs must be a number > 0, got {anneal_epochs!r}')
        if not math.isfinite(anneal_epochs) or anneal_epochs <= 0:
            raise ValueError(f'anneal_epochs (T) must be > 0 (epochs over which the KW '
                             f'temperature falls from 1 to 0), got {anneal_epochs!r}')
        self.anneal_epochs = float(anneal_epochs)
        self._iters_per_epoch: Optional[int] = None  # known while training
        self._loaded_temperature: Optional[float] = None  # from a loaded checkpoint

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def _apply(self, runner, t: float) -> None:
        set_temperature(self._model(runner), t)

    def current_temperature(self, runner) -> float:
        """Temperature of the last training iteration run so far (1 before the first)."""
        if not runner.iter:
            return 1.0
        return temperature_at(runner.iter - 1, self.anneal_epochs, self._iters_per_epoch)

    # ------------------------------------------------------------------ training
    def before_train(self, runner) -> None:
        iters = len(runner.train_dataloader)
        if iters <= 0:
            raise ValueError('KWTemperatureHook needs a train dataloader with at least one batch')
        self._iters_per_epoch = iters
        if set_temperature(self._model(runner), self.current_temperature(runner)) == 0:
            print_log('KWTemperatureHook: the model has no KernelWarehouse layer; the hook '
                      'does nothing', logger='current', level=logging.WARNING)
        print_log(f'KWTemperatureHook: t falls from 1 to 0 over {self.anneal_epochs:g} epochs '
                  f'({int(math.ceil(self.anneal_epochs * iters))} iterations of {iters} per '
                  f'epoch); starting at iteration {runner.iter}', logger='current')

    def before_train_iter(self, runner, batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        t = temperature_at(runner.iter, self.anneal_epochs, self._iters_per_epoch)
        self._apply(runner, t)
        runner.message_hub.update_scalar(SCALAR_KEY, t)

    def after_train(self, runner) -> None:
        self._iters_per_epoch = None

    # ------------------------------------------------------------------ evaluation
    def _evaluation_temperature(self, runner) -> float:
        if self._iters_per_epoch is not None:  # inside runner.train()
            return self.current_temperature(runner)
        if self._loaded_temperature is not None:
            return self._loaded_temperature
        return 0.0

    def before_val(self, runner) -> None:
        self._apply(runner, self._evaluation_temperature(runner))

    def before_test(self, runner) -> None:
        self._apply(runner, self._evaluation_temperature(runner))

    # ------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._iters_per_epoch is not None:
            checkpoint.setdefault('meta', {})[META_KEY] = self.current_temperature(runner)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
        value = meta.get(META_KEY) if isinstance(meta, dict) else None
        self._loaded_temperature = None if value is None else float(value)

