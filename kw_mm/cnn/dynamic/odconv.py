"""ODConv: omni-dimensional dynamic convolution.

Li, Zhou, Yao, "Omni-Dimensional Dynamic Convolution", ICLR 2022. Written from the paper and the
state-dict layout of its release (OSVAI/ODConv), so released checkpoints load unchanged.

One attention per layer: ``z = ReLU(BN(fc(GAP(x))))`` (``fc`` a bias-free 1x1 conv
``Cin -> max(int(Cin * r), 16)``, r = 1/16), then four heads (1x1 convs with bias), each divided
by the temperature ``t``:

- channel ``a_c = sigmoid(W_c z / t)`` over the input channels (always);
- filter ``a_f = sigmoid(W_f z / t)`` over the output channels (not for depth-wise layers);
- spatial ``a_s = sigmoid(W_s z / t)`` over the ``k x k`` positions (not for ``k = 1``);
- kernel ``a_w = softmax(W_w z / t)`` over the ``K`` kernels (not for ``K = 1``).

``W_b = sum_i a_w[b, i] * (a_s[b] (.) weight[i])`` and
``y_b = a_f[b] (.) conv(a_c[b] (.) x_b, W_b)``: multiplying ``a_c`` into the input and ``a_f``
into the output is the same as multiplying them into the kernel's input and output channels (and
cheaper), as the release does.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..attention import AttentionBatchNorm1d
from ..precision import attention_precision, pool_to
from .base import (MixtureConv2d, TemperedAttention, check_attention_function, kernel_attention)

#: Smallest hidden width of the ODConv attention (the release's ``min_channel``).
MIN_HIDDEN = 16


class ODConvAttention(TemperedAttention):
    """The four attentions of an ODConv layer.

    Args:
        in_channels (int): Input channels of the layer.
        out_channels (int): Output channels of the layer.
        kernel_size (int): Spatial size ``k`` (square kernels).
        groups (int): Groups of the layer; ``groups == in_channels == out_channels`` is
            depth-wise (no filter attention).
        num_kernels (int): ``K`` (no kernel attention for 1).
        reduction (float): Hidden width ratio. Defaults to 1/16.
        attention_function (str): Kernel attention function, ``'softmax'`` or ``'caf'``
            (KW paper Table 10; the sigmoid heads are unchanged). Defaults to ``'softmax'``.

    The hidden BN normalizes the pooled vectors like a BatchNorm2d over ``[B, h, 1, 1]`` (same
    parameters and buffers); a training batch of one sample uses the running statistics
    (:class:`~kw_mm.cnn.AttentionBatchNorm1d`).

    ``forward`` returns ``(a_c [B, Cin], a_f [B, Cout] | None, a_s [B, k*k] | None,
    a_w [B, K] | None)``; None means the attention is absent (1). They are computed in the
    parameters' dtype (float32 under autocast: :mod:`~kw_mm.cnn.precision`).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int,
                 groups: int = 1,
                 num_kernels: int = 4,
                 reduction: float = 1 / 16,
                 attention_function: str = 'softmax') -> None:
        super().__init__()
        self.attention_function = check_attention_function(attention_function)
        hidden = max(int(in_channels * reduction), MIN_HIDDEN)
        self.fc = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn = AttentionBatchNorm1d(hidden)
        self.relu = nn.ReLU(inplace=True)
        self.channel_fc = nn.Conv2d(hidden, in_channels, 1)
        depthwise = in_channels == groups == out_channels
        self.filter_fc = None if depthwise else nn.Conv2d(hidden, out_channels, 1)
        self.spatial_fc = None if kernel_size == 1 else nn.Conv2d(hidden, kernel_size**2, 1)
        self.kernel_fc = None if num_kernels == 1 else nn.Conv2d(hidden, num_kernels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming (fan_out) 1x1 convs, zero biases, unit BN (the release)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    @attention_precision
    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """``ReLU(BN(fc(GAP(x))))`` as ``[B, h, 1, 1]``."""
        z = self.fc(pool_to(x, (2, 3), self.fc.weight.dtype, keepdim=True)).flatten(1)
        return self.relu(self.bn(z))[:, :, None, None]

    def _sigmoid(self, head: Optional[nn.Module], z: torch.Tensor) -> Optional[torch.Tensor]:
        return None if head is None else torch.sigmoid(head(z).flatten(1) / self.temperature)

    @attention_precision
    def forward(self, x: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        z = self.hidden(x)
        kernel = None
        if self.kernel_fc is not None:
            kernel = kernel_attention(self.kernel_fc(z).flatten(1), self.temperature,
                                      self.attention_function)
        return (self._sigmoid(self.channel_fc, z), self._sigmoid(self.filter_fc, z),
                self._sigmoid(self.spatial_fc, z), kernel)

    def extra_repr(self) -> str:
        return f'function={self.attention_function}, temperature={self.temperature}'


class ODConv2d(MixtureConv2d):
    """ODConv 2-D convolution (four attentions over ``K`` kernels; no bias, as released).

    Args:
        *conv_args, **conv_kwargs: ``in_channels, out_channels, kernel_size, stride, padding,
            dilation, groups`` as ``nn.Conv2d`` (square kernels); ``bias`` must be False (ODConv
            layers have no bias; a BN follows them).
        num_kernels (int): ``K``. Defaults to 4.
        reduction (float): Attention hidden ratio. Defaults to 1/16.
        attention_function (str): ``'softmax'`` or ``'caf'``. Defaults to ``'softmax'``.

    Example:
        >>> conv = ODConv2d(16, 32, 3, padding=1)
        >>> conv(torch.rand(2, 16, 8, 8)).shape
        torch.Size([2, 32, 8, 8])
    """

    def __init__(self, *conv_args, num_kernels: int = 4, reduction: float = 1 / 16,
                 attention_function: str = 'softmax', **conv_kwargs) -> None:
        super().__init__(*conv_args, num_kernels=num_kernels, **conv_kwargs)
        if self.bias is not None:
            raise ValueError('ODConv2d has no bias (as the ODConv release; a norm follows it), '
                             'got bias=True')
        if self.kernel_size[0] != self.kernel_size[1]:
            raise ValueError(f'ODConv2d needs a square kernel, got {self.kernel_size}')
        self.attention = ODConvAttention(self.in_channels, self.out_channels,
                                         self.kernel_size[0], self.groups, num_kernels,
                                         reduction, attention_function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel, filter_, spatial, kernel = self.attention(x)
        batch = x.shape[0]
        if kernel is None:
            kernels = self.weight.expand(batch, *self.weight.shape[1:])
        else:
            kernels, _ = self.mix(kernel)
        # The float32 attentions of autocast scale kernels and maps in their own dtype.
        if spatial is not None:
            kernels = kernels * spatial.view(batch, 1, 1, *self.kernel_size).to(kernels.dtype)
        out = self.conv_per_sample(x * channel[:, :, None, None].to(x.dtype), kernels)
        return out if filter_ is None else out * filter_[:, :, None, None].to(out.dtype)
