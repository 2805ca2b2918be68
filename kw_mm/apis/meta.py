"""Building models on the meta device: parameter shapes without memory or initialization."""
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

# Tensor constructors sent to the meta device while a model is built. Ranges (arange /
# linspace) stay on the CPU: constructors turn them into Python numbers (drop-path rates, with
# .item()), which a meta tensor cannot give; they never become parameters.
_META_CONSTRUCTORS = {
    torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full, torch.rand,
    torch.randn, torch.randint, torch.tensor, torch.as_tensor, torch.eye
}


class _MetaConstructors(TorchFunctionMode):
    """Creates parameters and buffers on the meta device: shapes without memory or init."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _META_CONSTRUCTORS and kwargs.get('device') is None:
            kwargs['device'] = 'meta'
        return func(*args, **kwargs)


@contextmanager
def meta_device() -> Iterator[None]:
    """Inside this context, tensor constructors without a device create meta tensors."""
    with _MetaConstructors():
        yield
