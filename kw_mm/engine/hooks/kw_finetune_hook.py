"""Fine-tuning without the KernelWarehouse attention initialization.

The paper (appendix A.1.2) fine-tunes its ImageNet backbones on COCO without the attention
initialization strategy, "to avoid disrupting the learnt relationships of the pre-trained models
between kernel cells and linear mixtures": the temperature ``t`` is 0 for the whole run, so the
one-hot ``beta`` never enters the attention.
"""
from typing import Optional, Union

from kw_mm.registry import HOOKS
from .base import BaseTemperatureHook
from .kw_temperature_hook import KWTemperatureHook

DataBatch = Optional[Union[dict, tuple, list]]

#: Hooks that change the temperature and therefore cannot run beside this one.
CONFLICTING_HOOKS = (KWTemperatureHook, )


@HOOKS.register_module()
class KWFinetuneHook(BaseTemperatureHook):
    """Keep every KW attention at temperature ``t = 0`` for a whole fine-tuning run.

    Before training, before every training iteration, and before validation and testing, the
    hook sets ``t = 0`` on every :class:`~kw_mm.cnn.KWAttention` of the model (unwrapped from
    DDP if needed), whatever the checkpoint or the backbone's default. At ``t = 0`` the
    attention skips the mix with ``beta`` altogether (not a multiplication by zero), so even a
    non-finite ``beta`` cannot reach the forward pass. The hook is stateless apart from a flag
    for its single log message, so resuming and distributed training need nothing special.

    A model without KW layers (a plain baseline) is left untouched, which lets every detection
    config carry the hook.

    The hook family: a subclass holds another method's layers at their trained temperature by
    overriding the class attributes below
    (:class:`~kw_mm.engine.hooks.DynamicConvFinetuneHook`: DY-Conv and ODConv at t = 1).

    Example:
        >>> custom_hooks = [dict(type='kw_mm.KWFinetuneHook')]
    """

    priority = 'HIGH'  # before hooks that may run a forward pass in the same stage
    #: The fine-tuning temperature and the hooks it excludes.
    temperature = 0.0
    conflicting_hooks = CONFLICTING_HOOKS

    def __init__(self) -> None:
        self._announced = False

    def announcement(self, count: int, model, stage: str) -> str:
        """What the hook logs once when it reached ``count`` attentions."""
        return (f'KWFinetuneHook: KernelWarehouse attention initialization disabled for the '
                f'whole run (from {stage}): temperature t = 0 on {count} KW attentions of '
                f'{type(model).__name__}; beta never enters the forward pass.')

    def _disable_init(self, runner, stage: str) -> int:
        """Set the fine-tuning temperature on every attention; log once per run what was done."""
        model = self.unwrapped_model(runner)
        count = self.apply_temperature(runner, self.temperature)
        if not self._announced:
            self._announced = True
            if count:
                runner.logger.info(self.announcement(count, model, stage))
            else:
                runner.logger.info(f'{type(self).__name__}: {type(model).__name__} has no '
                                   f'{self.family} layer; nothing to do.')
        return count

    def before_run(self, runner) -> None:
        others = [type(h).__name__ for h in getattr(runner, 'hooks', ())
                  if isinstance(h, self.conflicting_hooks)]
        if others:
            raise ValueError(f'{type(self).__name__} keeps the temperature at '
                             f'{self.temperature:g} for fine-tuning, but the config also has '
                             f'{others}, which anneals it; remove one of them from custom_hooks')

    def before_train(self, runner) -> None:
        self._disable_init(runner, 'training')

    def before_train_iter(self, runner, batch_idx: int, data_batch: DataBatch = None) -> None:
        # Every iteration, so that nothing (a loaded checkpoint, another hook, user code) can
        # bring beta back between iterations.
        self._disable_init(runner, 'training')

    def before_val(self, runner) -> None:
        self._disable_init(runner, 'validation')

    def before_test(self, runner) -> None:
        self._disable_init(runner, 'testing')
