"""DY-Conv: dynamic convolution with attention over ``K`` kernels.

Chen, Dai, Liu, Chen, Yuan, Liu, "Dynamic Convolution: Attention over Convolution Kernels",
CVPR 2020. There is no official code; the design below reproduces every DY-Conv parameter count
printed in the KernelWarehouse paper (Tables 1, 2, 4): see ``docs/design.md`` (the rivals).

Attention: ``a = softmax(fc2(ReLU(fc1(GAP(x)))) / t)`` over the ``K`` kernels, ``fc1`` a linear
layer ``Cin -> int(Cin * r)`` with bias (r = 1/4), ``fc2`` ``hidden -> K`` with bias, no norm.
Kernel: ``W_b = sum_i a[b, i] * weight[i]`` (biases alike); ``y_b = conv(x_b, W_b)``.
Temperature (paper Sec. 4.1): 30 at the start, linearly to 1 over the first epochs, 1 at test.
"""
import torch
import torch.nn as nn

from ..precision import attention_precision
from .base import (MixtureConv2d, TemperedAttention, check_attention_function, global_pool,
                   kernel_attention)


class DyConvAttention(TemperedAttention):
    """The kernel attention of a DY-Conv layer.

    Args:
        in_channels (int): Input channels of the layer.
        num_kernels (int): ``K``.
        reduction (float): Hidden width ratio: hidden = max(int(in_channels * reduction), 1).
            Defaults to 1/4.
        attention_function (str): ``'softmax'`` (DY-Conv) or ``'caf'`` (KW paper Table 10).
            Defaults to ``'softmax'``.

    Shapes:
        input: ``[B, in_channels, H, W]``; output: ``[B, K]``.
    """

    def __init__(self,
                 in_channels: int,
                 num_kernels: int,
                 reduction: float = 1 / 4,
                 attention_function: str = 'softmax') -> None:
        super().__init__()
        self.attention_function = check_attention_function(attention_function)
        hidden = max(int(in_channels * reduction), 1)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_kernels)
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(fc.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(fc.bias)

    @attention_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc2(self.relu(self.fc1(global_pool(x, self.fc1.weight.dtype))))
        return kernel_attention(logits, self.temperature, self.attention_function)

    def extra_repr(self) -> str:
        return f'function={self.attention_function}, temperature={self.temperature}'


class DyConv2d(MixtureConv2d):
    """DY-Conv 2-D convolution (``K`` kernels mixed per sample by a softmax attention).

    Args:
        *conv_args, **conv_kwargs: ``in_channels, out_channels, kernel_size, stride, padding,
            dilation, groups, bias`` as ``nn.Conv2d`` (default ``bias=False``; ``True`` gives
            one bias per kernel, mixed like the kernels); see :class:`MixtureConv2d`.
        num_kernels (int): ``K``. Defaults to 4.
        reduction (float): Attention hidden ratio. Defaults to 1/4.
        attention_function (str): ``'softmax'`` or ``'caf'``. Defaults to ``'softmax'``.

    Example:
        >>> conv = DyConv2d(16, 32, 3, padding=1)
        >>> conv(torch.rand(2, 16, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    def __init__(self, *conv_args, num_kernels: int = 4, reduction: float = 1 / 4,
                 attention_function: str = 'softmax', **conv_kwargs) -> None:
        super().__init__(*conv_args, num_kernels=num_kernels, **conv_kwargs)
        self.attention = DyConvAttention(self.in_channels, num_kernels, reduction,
                                         attention_function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels, bias = self.mix(self.attention(x))
        return self.conv_per_sample(x, kernels, bias)
