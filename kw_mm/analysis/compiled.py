"""The compiled contestant: a model run through ``torch.compile``, its compile time kept apart.

:class:`CompiledContestant` (kind ``'compiled'`` of :data:`~.contestants.CONTESTANT_KINDS`)
runs the same eval and training steps as the eager :class:`~.contestants.Contestant`, with the
model's forward compiled (inductor by default, static shapes: one graph per batch size and mode,
as a deployed model runs one input size). ``torch.compile`` compiles lazily, at the first call
of a step with a new input shape or mode; :meth:`CompiledContestant.warm` makes that call
before anything is timed and records how long it took (the compile time, reported separately:
it includes that one step).
"""
import time
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn

from .contestants import Contestant, ModelSpec, register_contestant_kind


class CompiledContestant(Contestant):
    """A model whose forward runs compiled by ``torch.compile``.

    Args:
        name, model, spec, impl, device: As :class:`~.contestants.Contestant`.
        backend (str): The ``torch.compile`` backend. Defaults to ``'inductor'``.
        mode (str, optional): ``torch.compile``'s mode (``'max-autotune'``, ...). Defaults to
            None (its default mode).
        dynamic (bool): Compile for dynamic shapes. Defaults to False: every batch size gets
            its own graph, specialized to it.
    """

    kind = 'compiled'

    def __init__(self, name: str, model: nn.Module, spec: ModelSpec,
                 impl: Optional[str] = None, device: str = 'cpu', backend: str = 'inductor',
                 mode: Optional[str] = None, dynamic: bool = False) -> None:
        super().__init__(name, model, spec, impl, device)
        self.backend = backend
        self.compiled = torch.compile(self.model, backend=backend, mode=mode, dynamic=dynamic)
        #: Seconds of the first call of every step warmed (``'eval_b1'``, ``'train_b8'``...):
        #: compilation plus one step.
        self.compile_seconds: Dict[str, float] = {}

    def forward(self) -> Callable:
        return self.compiled

    def warm(self, key: str, step: Callable[[], None]) -> float:
        """Run ``step`` once (it compiles) and keep its duration as ``compile_seconds[key]``;
        returns the seconds."""
        start = time.perf_counter()
        step()
        self.compile_seconds[key] = time.perf_counter() - start
        return self.compile_seconds[key]


register_contestant_kind('compiled', CompiledContestant)
