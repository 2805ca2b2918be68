"""What the rival dynamic convolutions share (DY-Conv, ODConv, CondConv; torch only).

Each of them gives every sample ``b`` its own kernel ``W_b``, a mixture of ``K`` static kernels
(possibly rescaled), and computes ``y_b = conv(x_b, W_b)``. The shared parts are:

- :class:`MixtureConv2d`: the ``K`` kernels ``weight [K, Cout, Cin/g, k, k]`` (and optional
  expert biases ``[K, Cout]``), their initialization and the per-sample convolution;
- :func:`per_sample_conv2d`: one grouped convolution over the batch ("batch as groups");
- :class:`TemperedAttention`: the softmax temperature of DY-Conv and ODConv (t >= 1, divides the
  logits; 30 -> 1 during the first epochs of pretraining, 1 at test and fine-tuning);
- :func:`kernel_attention`: softmax over the ``K`` kernels, or KernelWarehouse's CAF
  (paper Table 10).
"""
import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from ..functional import CAF_EPS
from ..precision import pool_to
from ..temperature import set_temperature_of

#: The attention functions of the kernel attention (KW paper, Table 10).
ATTENTION_FUNCTIONS = ('softmax', 'caf')


def check_attention_function(name: str) -> str:
    """Return ``name`` or raise naming the allowed attention functions."""
    if name not in ATTENTION_FUNCTIONS:
        raise ValueError(f'attention_function must be one of {list(ATTENTION_FUNCTIONS)}, got '
                         f'{name!r}')
    return name


def kernel_attention(logits: torch.Tensor, temperature: float, function: str) -> torch.Tensor:
    """Normalize kernel logits ``[B, K]`` over the kernels.

    ``'softmax'``: ``softmax(z / t)`` (DY-Conv, ODConv). ``'caf'``: KernelWarehouse's
    contrasting-driven attention function ``z / (sum |z| + eps)`` without its one-hot
    initialization term (that term assigns warehouse cells to linear mixtures, which a kernel
    attention over ``K`` holistic kernels does not have). CAF is invariant to the scale of ``z``,
    so the temperature has no effect on it.
    """
    if function == 'softmax':
        return torch.softmax(logits / temperature, dim=-1)
    return logits / (logits.abs().sum(dim=-1, keepdim=True) + CAF_EPS)


def global_pool(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Global average pooling ``[B, C, H, W] -> [B, C]`` in ``dtype`` (the attention's
    parameter dtype: float32 under autocast, see :mod:`~kw_mm.cnn.precision`)."""
    return pool_to(x, (2, 3), dtype)


def per_sample_conv2d(x: torch.Tensor, kernels: torch.Tensor, bias: Optional[torch.Tensor],
                      stride: Tuple[int, int], padding: Tuple[int, int],
                      dilation: Tuple[int, int], groups: int) -> torch.Tensor:
    """Convolve sample ``b`` of ``x`` with its own kernel ``kernels[b]``.

    The batch becomes ``B`` times the groups of one convolution: ``x`` is viewed as
    ``[1, B*Cin, H, W]`` and the kernels as ``[B*Cout, Cin/g, k, k]``.

    Args:
        x (Tensor): ``[B, Cin, H, W]``.
        kernels (Tensor): ``[B, Cout, Cin/g, kh, kw]``.
        bias (Tensor, optional): ``[B, Cout]``.
        stride, padding, dilation (tuple): As ``F.conv2d``.
        groups (int): Groups of the layer (``g``).

    Returns:
        Tensor: ``[B, Cout, H', W']``.
    """
    batch, cout = kernels.shape[:2]
    out = F.conv2d(x.reshape(1, -1, *x.shape[2:]),
                   kernels.reshape(batch * cout, *kernels.shape[2:]),
                   None if bias is None else bias.reshape(-1), stride, padding, dilation,
                   groups * batch)
    return out.view(batch, cout, *out.shape[2:])


class TemperedAttention(nn.Module):
    """Base of the attentions whose softmax is divided by a temperature (DY-Conv, ODConv).

    ``temperature`` is runtime state (an attribute, never in a state dict), 1 by default: the
    value for evaluation and fine-tuning. Pretraining anneals it from
    :attr:`initial_temperature` to :attr:`final_temperature`
    (``kw_mm.DynamicConvTemperatureHook``).
    """

    #: DY-Conv (Chen et al., CVPR 2020, Sec. 4.1) and the ODConv release: 30 -> 1.
    initial_temperature = 30.0
    final_temperature = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.temperature = 1.0


def check_softmax_temperature(t: float) -> float:
    """Return ``t`` as a float, or raise if it is not a finite number > 0."""
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise TypeError(f'softmax temperature must be a number > 0, got {t!r}') from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f'softmax temperature must be a finite number > 0, got {t!r}')
    return value


def set_softmax_temperature(model: nn.Module, t: float) -> int:
    """Set the temperature of every DY-Conv / ODConv attention of ``model``.

    Returns:
        int: The number of attentions updated.
    """
    return set_temperature_of(model, TemperedAttention, check_softmax_temperature(t))


def get_softmax_temperature(model: nn.Module) -> float:
    """The temperature of the DY-Conv / ODConv attentions of ``model``.

    Raises:
        ValueError: If the model has none, or they disagree.
    """
    values = {m.temperature for m in model.modules() if isinstance(m, TemperedAttention)}
    if len(values) != 1:
        what = 'no DY-Conv / ODConv layer' if not values else f'temperatures {sorted(values)}'
        raise ValueError(f'{type(model).__name__} has {what}')
    return values.pop()


class MixtureConv2d(nn.Module):
    """A 2-D convolution whose per-sample kernel mixes ``K`` static kernels.

    Holds ``weight [K, Cout, Cin/g, kh, kw]`` (5-D even for ``K = 1``, as the ODConv release)
    and, with ``bias=True``, one bias per kernel ``bias [K, Cout]``. Subclasses compute the
    per-sample kernels and call :meth:`conv_per_sample`.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int | tuple): Kernel size.
        stride, padding, dilation (int | tuple): As ``nn.Conv2d``.
        groups (int): Groups. Defaults to 1.
        bias (bool): Expert biases mixed like the kernels. Defaults to False.
        num_kernels (int): ``K``. Defaults to 4.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: Union[int, Tuple[int, int]],
                 stride: Union[int, Tuple[int, int]] = 1,
                 padding: Union[int, Tuple[int, int]] = 0,
                 dilation: Union[int, Tuple[int, int]] = 1,
                 groups: int = 1,
                 bias: bool = False,
                 num_kernels: int = 4) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'in_channels ({in_channels}) and out_channels ({out_channels}) '
                             f'must be divisible by groups ({groups})')
        if not isinstance(num_kernels, int) or num_kernels < 1:
            raise ValueError(f'num_kernels must be an integer >= 1, got {num_kernels!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.num_kernels = num_kernels
        self.weight = nn.Parameter(
            torch.empty(num_kernels, out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(num_kernels, out_channels)) if bias else None
        self.reset_kernels()

    @property
    def is_pointwise(self) -> bool:
        return self.kernel_size == (1, 1)

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.in_channels == self.out_channels

    def reset_kernels(self) -> None:
        """Every kernel kaiming-normal (fan_out, relu), biases zero (the ODConv release)."""
        for i in range(self.num_kernels):
            nn.init.kaiming_normal_(self.weight[i], mode='fan_out', nonlinearity='relu')
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def mix(self, kernel_weights: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Per-sample kernels ``[B, Cout, Cin/g, kh, kw]`` and biases ``[B, Cout]``.

        Args:
            kernel_weights (Tensor): ``[B, K]`` weights of the ``K`` kernels.
        """
        kernels = (kernel_weights @ self.weight.flatten(1)).view(-1, *self.weight.shape[1:])
        bias = None if self.bias is None else kernel_weights @ self.bias
        return kernels, bias

    def conv_per_sample(self, x: torch.Tensor, kernels: torch.Tensor,
                        bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        return per_sample_conv2d(x, kernels, bias, self.stride, self.padding, self.dilation,
                                 self.groups)

    def extra_repr(self) -> str:
        text = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}, num_kernels={self.num_kernels}')
        if self.dilation != (1, 1):
            text += f', dilation={self.dilation}'
        if self.groups != 1:
            text += f', groups={self.groups}'
        return text + f', bias={self.bias is not None}'
