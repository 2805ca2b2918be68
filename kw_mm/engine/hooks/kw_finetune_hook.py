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

    Example:
        >>> custom_hooks = [dict(type='kw_mm.KWFinetuneHook')]
    """

    priority = 'HIGH'  # before hooks that may run a forward pass in the same stage

    def __init__(self) -> None:
        self._announced = False

    def _disable_init(self, runner, stage: str) -> int:
        """Set t = 0 on every KW attention; log once per run what was done."""
        model = self.unwrapped_model(runner)
        count = self.apply_temperature(runner, 0.0)
        if not self._announced:
            self._announced = True
            if count:
                runner.logger.info(
                    f'KWFinetuneHook: KernelWarehouse attention initialization disabled for the '
                    f'whole run (from {stage}): temperature t = 0 on {count} KW attentions of '
                    f'{type(model).__name__}; beta never enters the forward pass.')
            else:
                runner.logger.info(f'KWFinetuneHook: {type(model).__name__} has no '
                                   'KernelWarehouse layer; nothing to do.')
        return count

    def before_run(self, runner) -> None:
        others = [type(h).__name__ for h in getattr(runner, 'hooks', ())
                  if isinstance(h, CONFLICTING_HOOKS)]
        if others:
            raise ValueError(f'KWFinetuneHook keeps the temperature at 0 for fine-tuning, but the '
                             f'config also has {others}, which anneals it; remove one of them '
                             'from custom_hooks')

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

