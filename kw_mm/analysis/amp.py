"""The mixed-precision contestant: a model whose steps run under ``torch.autocast``.

:class:`AmpContestant` (kind ``'amp'`` of :data:`~.contestants.CONTESTANT_KINDS`) runs the same
eval and training steps as the eager :class:`~.contestants.Contestant`, with the forward under
``torch.autocast(device, dtype)`` as mmengine's ``AmpOptimWrapper`` (and
:class:`kw_mm.engine.CPUAmpOptimWrapper` on a CPU) runs it: the parameters and the optimizer stay
in float32, float16 gets a gradient scaler. A KW model can be held at a temperature ``t``: while
``t > 0`` (the anneal at the start of a pretraining) its layers assemble their kernels from
split attentions (:func:`~kw_mm.cnn.precision.split_attentions`), which is what the benchmark's
AMP session prices.
"""
from typing import Optional

import torch
import torch.nn as nn

from .contestants import Contestant, ModelSpec, register_contestant_kind

#: The autocast dtypes by the names the tools take.
AMP_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16,
              'fp16': torch.float16}


def amp_dtype(name: str) -> torch.dtype:
    """The autocast dtype named ``name`` (a key of :data:`AMP_DTYPES`)."""
    if name not in AMP_DTYPES:
        raise ValueError(f'AMP dtype must be one of {sorted(AMP_DTYPES)}, got {name!r}')
    return AMP_DTYPES[name]


class AmpContestant(Contestant):
    """A model whose eval and training steps run under ``torch.autocast``.

    Args:
        name, model, spec, impl, device: As :class:`~.contestants.Contestant`.
        dtype (torch.dtype): The autocast dtype. Defaults to ``torch.bfloat16``.
        temperature (float, optional): The KW temperature the model is held at (its own:
            give each contestant its own model). Defaults to None (left as built: 0).
    """

    kind = 'amp'

    def __init__(self, name: str, model: nn.Module, spec: ModelSpec,
                 impl: Optional[str] = None, device: str = 'cpu',
                 dtype: torch.dtype = torch.bfloat16,
                 temperature: Optional[float] = None) -> None:
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f'AMP runs in bfloat16 or float16, got {dtype}')
        super().__init__(name, model, spec, impl, device)
        self.dtype = dtype
        self.temperature = temperature
        if temperature is not None:
            from kw_mm.cnn import set_temperature
            set_temperature(self.model, temperature)
        # float16 overflows without a loss scale (AmpOptimWrapper's GradScaler); bfloat16
        # keeps float32's range and runs without one.
        self.scaler = torch.amp.GradScaler(self.device.type) \
            if dtype == torch.float16 else None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        if self.scaler is None:
            super()._backward_and_step(loss)
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


register_contestant_kind('amp', AmpContestant)
