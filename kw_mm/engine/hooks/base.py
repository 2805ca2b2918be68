"""What the hooks that take charge of the KW temperature share."""
from typing import Iterable, List

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from kw_mm.cnn import set_temperature


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside a wrapper (DDP and mmengine's wrappers), or ``model`` itself."""
    return model.module if is_model_wrapper(model) else model


class BaseTemperatureHook(Hook):
    """Base of the hooks that set the temperature of every KW attention of the Runner's model
    (:class:`KWTemperatureHook` for pretraining, :class:`KWFinetuneHook` for fine-tuning).

    The Runner and the checks recognize these hooks by this class. The hooks of another
    method's temperature (DY-Conv / ODConv) are members of the same family: they override
    :attr:`family` and :attr:`set_model_temperature`.
    """

    #: Which layers the hook drives (for messages).
    family = 'KernelWarehouse'
    #: Sets the temperature on every layer of the family; returns how many it reached.
    set_model_temperature = staticmethod(set_temperature)

    @staticmethod
    def unwrapped_model(runner) -> nn.Module:
        return unwrap_model(runner.model)

    def apply_temperature(self, runner, t: float) -> int:
        """Set ``t`` on every attention of the family in the runner's model; their number."""
        return self.set_model_temperature(self.unwrapped_model(runner), t)


def find_temperature_hooks(hooks: Iterable[Hook]) -> List[Hook]:
    """The hooks among ``hooks`` that set the KW temperature."""
    return [h for h in hooks if isinstance(h, BaseTemperatureHook)]
