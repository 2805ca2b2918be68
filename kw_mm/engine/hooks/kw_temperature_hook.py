"""The temperature schedule of KernelWarehouse pretraining.

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024, appendix
A.1.1: "the temperature t linearly reduces from 1 to 0 in the first T epochs" (T = 10 for the
100-epoch recipes, 20 for the 300-epoch recipe). The reference trainer updates it every
iteration with ``t = max(0, 1 - (epoch * iters_per_epoch + step + 1) / (T * iters_per_epoch))``.
"""
import logging
import math
from typing import Any, Mapping, Optional, Union

from mmengine.logging import print_log

from kw_mm.registry import HOOKS
from .base import BaseTemperatureHook

DATA_BATCH = Optional[Union[dict, tuple, list]]
#: Key of the temperature in the run's scalars (``train/`` is dropped in the log and scalars.json).
SCALAR_KEY = 'train/kw_temperature'


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


def checkpoint_temperature(checkpoint: Any, anneal_epochs: float) -> Optional[float]:
    """The temperature of the last training iteration before a Runner checkpoint was saved.

    Derived, not stored: mmengine's checkpoint records the iterations run so far
    (``meta['iter']``) and, in its message hub, the run's ``max_iters`` and ``max_epochs``. An
    epoch-based run (``EpochBasedTrainLoop``, every kw_mm config) has
    ``max_iters = max_epochs * len(train_dataloader)``, so the epoch length of the schedule is
    ``max_iters / max_epochs`` whatever the number of processes at evaluation. This is the t
    the run used for its last iteration and its validation.

    Args:
        checkpoint (Any): A loaded checkpoint (a Runner checkpoint, or anything else).
        anneal_epochs (float): ``T`` of the schedule (the config's KWTemperatureHook).

    Returns:
        float | None: The temperature, or None if ``checkpoint`` is not a Runner checkpoint of a
        training run (a released or converted state dict: the trained model, t = 0).
    """
    if not isinstance(checkpoint, Mapping):
        return None
    meta = checkpoint.get('meta')
    hub = checkpoint.get('message_hub')
    runtime = hub.get('runtime_info') if isinstance(hub, Mapping) else None
    if not isinstance(meta, Mapping) or not isinstance(runtime, Mapping):
        return None
    iteration, max_iters = meta.get('iter'), runtime.get('max_iters')
    max_epochs = runtime.get('max_epochs')
    if not all(isinstance(v, int) and v > 0 for v in (max_iters, max_epochs)) or \
            not isinstance(iteration, int) or iteration < 0:
        return None
    if iteration == 0:
        return 1.0  # saved before the first iteration: the one-hot initialization
    return temperature_at(iteration - 1, anneal_epochs, max_iters / max_epochs)


def unfinished_anneal(anneal_epochs: float, max_epochs: Any) -> Optional[str]:
    """A one-line explanation if an anneal of ``anneal_epochs`` cannot end within ``max_epochs``
    (the model would be trained, and its last checkpoint saved, at t > 0), else None."""
    if not isinstance(max_epochs, (int, float)) or anneal_epochs <= max_epochs:
        return None
    t_end = 1.0 - max_epochs / anneal_epochs
    return (f'KWTemperatureHook anneals t from 1 to 0 over {anneal_epochs:g} epochs but the run '
            f'has max_epochs={max_epochs}: it would end at t = {t_end:g}, a model that only '
            'works at that temperature; lower anneal_epochs or raise train_cfg.max_epochs, or '
            'allow it on purpose (KWTemperatureHook(allow_unfinished_anneal=True), '
            'tools/train.py --allow-unfinished-anneal)')


def temperature_hook_cfg_in(cfg: Mapping) -> Optional[Mapping]:
    """The config entry of the KWTemperatureHook in ``cfg.custom_hooks``, or None."""
    for hook in cfg.get('custom_hooks') or []:
        kind = hook.get('type') if isinstance(hook, Mapping) else None
        hook_class = HOOKS.get(kind) if isinstance(kind, str) else kind
        if isinstance(hook_class, type) and issubclass(hook_class, KWTemperatureHook):
            return hook
    return None


def temperature_hook_in(cfg: Mapping) -> Optional['KWTemperatureHook']:
    """The KWTemperatureHook of a config's ``custom_hooks``, built, or None if it has none.

    For tools that evaluate a checkpoint without a Runner (``tools/analysis/vis_attention.py``).
    """
    hook = temperature_hook_cfg_in(cfg)
    if hook is None:
        return None
    return KWTemperatureHook(**{k: v for k, v in hook.items() if k not in ('type', 'priority')})


@HOOKS.register_module()
class KWTemperatureHook(BaseTemperatureHook):
    """Anneal the temperature ``t`` of every KW attention from 1 to 0 over the first epochs.

    The hook keeps no schedule state: before every training iteration it computes
    ``t = max(0, 1 - (runner.iter + 1) / (anneal_epochs * iters_per_epoch))`` and writes it on the
    unwrapped model, so a resumed run continues the exact sequence and DDP needs nothing extra.
    ``runner.iter`` counts data batches, also under gradient accumulation
    (``optim_wrapper.accumulative_counts``: the optimizer steps every k batches, the loop still
    advances ``runner.iter`` by one per batch), which is what the reference trainer counts.

    Validation during training uses the temperature of the last training iteration; after the
    anneal ``t`` stays 0. Evaluating a loaded Runner checkpoint (``tools/test.py``) uses the
    same temperature, derived from the checkpoint's iteration and this hook's schedule
    (:func:`checkpoint_temperature`); nothing of the schedule is written into checkpoints. A
    checkpoint that is not a Runner checkpoint of a training run (a released or converted
    state dict) is evaluated at ``t = 0``, the trained model.

    The anneal is defined in epochs, so the hook expects an epoch-based train loop; with an
    ``IterBasedTrainLoop`` (which counts the whole run as one epoch) an epoch is
    ``len(train_dataloader)`` batches, and the t of its checkpoints cannot be derived (a
    warning says so).

    Every training iteration writes ``kw_temperature`` to the run's scalars, so it is logged
    next to the loss and lands in ``vis_data/scalars.json``.

    The hook family: subclasses anneal another method's temperature with the same linear
    schedule, from :attr:`start` to :attr:`end` (``t = end + (start - end) * f`` with
    ``f = max(0, 1 - (iter + 1) / (T * iters_per_epoch))``), by overriding the class attributes
    below (e.g. :class:`~kw_mm.engine.hooks.DynamicConvTemperatureHook`: DY-Conv and ODConv,
    30 -> 1).
    A run whose anneal cannot end within ``max_epochs`` is refused before its first iteration
    (it would train a model that only works at the final t > 0), unless
    ``allow_unfinished_anneal=True`` says it is meant (then a warning is logged).

    Args:
        anneal_epochs (float): ``T``, the number of epochs over which ``t`` falls from 1 to 0
            (a fraction is allowed). Must be > 0.
        allow_unfinished_anneal (bool): Train even if ``T > max_epochs``. Defaults to False.

    Example:
        >>> custom_hooks = [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=10)]
    """

    priority = 'NORMAL'
    #: The temperature before the first iteration and after the anneal.
    start, end = 1.0, 0.0
    #: The scalar it logs.
    scalar_key = SCALAR_KEY

    def __init__(self, anneal_epochs: float, allow_unfinished_anneal: bool = False) -> None:
        if isinstance(anneal_epochs, bool) or not isinstance(anneal_epochs, (int, float)):
            raise TypeError(f'anneal_epochs must be a number > 0, got {anneal_epochs!r}')
        if not math.isfinite(anneal_epochs) or anneal_epochs <= 0:
            raise ValueError(f'anneal_epochs (T) must be > 0 (epochs over which the KW '
                             f'temperature falls from 1 to 0), got {anneal_epochs!r}')
        self.anneal_epochs = float(anneal_epochs)
        self.allow_unfinished_anneal = bool(allow_unfinished_anneal)
        self._iters_per_epoch: Optional[int] = None  # known while training
        self._loaded_temperature: Optional[float] = None  # of a loaded checkpoint

    # ------------------------------------------------------------------ helpers
    def schedule(self, fraction: float) -> float:
        """The temperature at ``fraction`` (1 -> 0) of the anneal: from start to end."""
        return self.end + (self.start - self.end) * fraction

    def current_temperature(self, runner) -> float:
        """Temperature of the last training iteration run so far (start before the first)."""
        if not runner.iter:
            return self.start
        return self.schedule(
            temperature_at(runner.iter - 1, self.anneal_epochs, self._iters_per_epoch))

    # ------------------------------------------------------------------ training
    def before_train(self, runner) -> None:
        iters = len(runner.train_dataloader)
        if iters <= 0:
            raise ValueError('KWTemperatureHook needs a train dataloader with at least one batch')
        # in epochs of this loader, also for an iteration-based loop (one "epoch" of max_iters)
        problem = unfinished_anneal(self.anneal_epochs, runner.max_iters / iters
                                    if runner.max_iters % iters else runner.max_iters // iters)
        if problem and not self.allow_unfinished_anneal:
            raise ValueError(problem)
        if problem:
            print_log(f'{problem} (allowed)', logger='current', level=logging.WARNING)
        self._iters_per_epoch = iters
        name = type(self).__name__
        if self.apply_temperature(runner, self.current_temperature(runner)) == 0:
            print_log(f'{name}: the model has no {self.family} layer; the hook does nothing',
                      logger='current', level=logging.WARNING)
        print_log(f'{name}: t falls from {self.start:g} to {self.end:g} over '
                  f'{self.anneal_epochs:g} epochs '
                  f'({int(math.ceil(self.anneal_epochs * iters))} iterations of {iters} per '
                  f'epoch); starting at iteration {runner.iter}', logger='current')
        if runner.max_iters != runner.max_epochs * iters:
            print_log(f'{name}: the train loop is not epoch based (max_iters '
                      f'{runner.max_iters} != max_epochs {runner.max_epochs} x {iters}); '
                      'evaluating its checkpoints cannot derive their t (they would take '
                      'max_iters / max_epochs as the epoch length): evaluate after the anneal',
                      logger='current', level=logging.WARNING)

    def before_train_iter(self, runner, batch_idx: int, data_batch: DATA_BATCH = None) -> None:
        t = self.schedule(temperature_at(runner.iter, self.anneal_epochs, self._iters_per_epoch))
        self.apply_temperature(runner, t)
        runner.message_hub.update_scalar(self.scalar_key, t)

    def after_train(self, runner) -> None:
        self._iters_per_epoch = None

    # ------------------------------------------------------------------ evaluation
    def _evaluation_temperature(self, runner) -> float:
        if self._iters_per_epoch is not None:  # inside runner.train()
            return self.current_temperature(runner)
        t = self.end if self._loaded_temperature is None else self._loaded_temperature
        source = ('no training-run checkpoint loaded: the trained model'
                  if self._loaded_temperature is None else
                  f"the loaded checkpoint's last training iteration, T = "
                  f'{self.anneal_epochs:g} epochs')
        print_log(f'{type(self).__name__}: evaluating at t = {t:g} ({source})',
                  logger='current')
        return t

    def before_val(self, runner) -> None:
        self.apply_temperature(runner, self._evaluation_temperature(runner))

    def before_test(self, runner) -> None:
        self.apply_temperature(runner, self._evaluation_temperature(runner))

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_temperature(self, checkpoint: Any) -> Optional[float]:
        """The t of ``checkpoint`` under this hook's schedule (:func:`checkpoint_temperature`)."""
        fraction = checkpoint_temperature(checkpoint, self.anneal_epochs)
        return None if fraction is None else self.schedule(fraction)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded_temperature = self.checkpoint_temperature(checkpoint)
