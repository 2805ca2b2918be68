"""The temperature hooks of DY-Conv and ODConv: members of the KW hook family.

Both methods divide their softmax (ODConv: also its sigmoids) by a temperature t that starts
at 30 and falls linearly to 1 during the first epochs of pretraining (DY-Conv, Chen et al.,
CVPR 2020, Sec. 4.1: "the temperature ... from 30 to 1 linearly in the first 10 epochs"; the
ODConv release: temp_init 30, temp_epoch 10, updated every iteration with the same formula as
KW's). Evaluation and fine-tuning run at t = 1 (the ODConv release's detection backbones set 1
and never anneal). CondConv has no temperature.
"""
import math

from kw_mm.cnn.dynamic import TemperedAttention, set_softmax_temperature
from kw_mm.registry import HOOKS
from .kw_finetune_hook import KWFinetuneHook
from .kw_temperature_hook import KWTemperatureHook


@HOOKS.register_module()
class DynamicConvTemperatureHook(KWTemperatureHook):
    """Anneal the softmax temperature of every DY-Conv / ODConv attention from 30 to 1.

    The schedule, resume and evaluation behaviour of :class:`KWTemperatureHook`, with
    ``t = end + (start - end) * max(0, 1 - (iter + 1) / (T * iters_per_epoch))``: exactly the
    ODConv release's per-iteration formula. Logged as ``softmax_temperature``.

    Args:
        anneal_epochs (float): ``T``. Defaults to 10 (DY-Conv paper, ODConv release).
        start (float): The initial temperature. Defaults to 30.
        end (float): The temperature after the anneal, for evaluation. Defaults to 1.
        allow_unfinished_anneal (bool): As :class:`KWTemperatureHook`. Defaults to False.

    Example:
        >>> custom_hooks = [dict(type='kw_mm.DynamicConvTemperatureHook', anneal_epochs=10)]
    """

    start = TemperedAttention.initial_temperature
    end = TemperedAttention.final_temperature
    family = 'DY-Conv / ODConv'
    scalar_key = 'train/softmax_temperature'
    set_model_temperature = staticmethod(set_softmax_temperature)

    def __init__(self, anneal_epochs: float = 10, start: float = start, end: float = end,
                 allow_unfinished_anneal: bool = False) -> None:
        super().__init__(anneal_epochs, allow_unfinished_anneal)
        for name, value in (('start', start), ('end', end)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or value <= 0:
                raise ValueError(f'{name} must be a finite temperature > 0, got {value!r}')
        if start < end:
            raise ValueError(f'start ({start}) must be >= end ({end}): the temperature anneals '
                             'downwards')
        self.start, self.end = float(start), float(end)


@HOOKS.register_module()
class DynamicConvFinetuneHook(KWFinetuneHook):
    """Keep every DY-Conv / ODConv attention at t = 1 for a whole fine-tuning run.

    As the ODConv release's detection backbones (t = 1 set at initialization, no annealing);
    DY-Conv has no release and uses its test temperature, 1.

    Example:
        >>> custom_hooks = [dict(type='kw_mm.DynamicConvFinetuneHook')]
    """

    temperature = TemperedAttention.final_temperature
    family = 'DY-Conv / ODConv'
    set_model_temperature = staticmethod(set_softmax_temperature)
    conflicting_hooks = (DynamicConvTemperatureHook, )

    def announcement(self, count, model, stage) -> str:
        return (f'DynamicConvFinetuneHook: softmax temperature t = {self.temperature:g} on '
                f'{count} DY-Conv / ODConv attentions of {type(model).__name__} for the whole '
                f'run (from {stage}).')
