"""Runtime control of the attention-initialization temperature ``t``."""
import torch.nn as nn

from .attention import KWAttention


def check_temperature(t: float) -> float:
    """Return ``t`` as a float, or raise if it is not a number in [0, 1]."""
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise TypeError(f'temperature must be a number in [0, 1], got {t!r}') from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f'temperature must be in [0, 1], got {t!r}')
    return value


def set_temperature(model: nn.Module, t: float) -> int:
    """Set the temperature of every KW attention in ``model`` (wrapped or not).

    ``t = 1`` makes every attention its one-hot initialization, ``t = 0`` switches the
    initialization off. The temperature is runtime state, never part of a state dict.

    Args:
        model (nn.Module): Any module; model wrappers such as DDP are traversed as well.
        t (float): The temperature, in [0, 1].

    Returns:
        int: The number of KW attentions updated.
    """
    return set_temperature_of(model, KWAttention, check_temperature(t))


def set_temperature_of(model: nn.Module, kind: type, value: float) -> int:
    """Set ``temperature = value`` on every module of class ``kind``; returns how many."""
    modules = [m for m in model.modules() if isinstance(m, kind)]
    for m in modules:
        m.temperature = value
    return len(modules)


def get_temperature(model: nn.Module) -> float:
    """The temperature of the KW attentions of ``model``.

    Raises:
        ValueError: If the model has no KW layer, or its layers disagree.
    """
    values = {m.temperature for m in model.modules() if isinstance(m, KWAttention)}
    if not values:
        raise ValueError(f'{type(model).__name__} has no KernelWarehouse layer')
    if len(values) > 1:
        raise ValueError(f'KW layers of {type(model).__name__} have different temperatures: '
                         f'{sorted(values)}')
    return values.pop()
