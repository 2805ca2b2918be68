"""KW*: KernelWarehouse with ODConv's channel, filter and spatial attentions (KW paper,
appendix Table 17: "combining KernelWarehouse and ODConv ... to compute attention weights for
KernelWarehouse along the aforementioned four dimensions instead of one single dimension").

No code was published. The design that reproduces the printed 12.51M for KW* 4x MobileNetV2
(docs/rivals.md, section 5): every KW attention also gets three heads read from its hidden
vector (after the attention's norm and ReLU), each a linear layer with bias: channel
``h -> Cin``, filter ``h -> Cout`` (depth-wise layers included) and spatial ``h -> k*k``
(``k > 1`` only). KW's cell attention plays the part of ODConv's kernel attention. As in ODConv,
the three attentions scale the assembled kernel's input channels, output channels and spatial
positions; the channel and filter attentions are applied to the input and output feature maps
(the same product, cheaper) and the spatial one to the cell mixtures of each position (a
kernel position is made of the mixtures ``j`` with ``j // (go * gi) = s``, so scaling those
mixtures scales exactly that position).

Temperature (not documented by the paper; our choice): the heads follow KW's temperature the
way KW's attention follows it towards its initialization,
``a = t + (1 - t) * sigmoid(W z + b)``: at ``t = 1`` (start of pretraining) every head is 1 and
KW* starts as KW exactly; at ``t = 0`` (after the anneal, fine-tuning) the heads are the plain
sigmoids of ODConv at its test temperature 1.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn

from . import fast
from .attention import KWAttention
from .export import kw_conv_export
from .functional import kw_attention_reference, kw_conv_reference
from .precision import attention_precision


class KWStarAttention(KWAttention):
    """A :class:`KWAttention` with ODConv's channel, filter and spatial heads.

    Args:
        in_channels (int): Input channels of the layer.
        num_mixtures (int): ``M``.
        num_cells (int): ``n``.
        out_channels (int): Output channels of the layer.
        spatial_size (int): Positions of the kernel (``k * k``); 1 has no spatial head.
        **kwargs: The other arguments of :class:`KWAttention`.
    """

    def __init__(self, in_channels: int, num_mixtures: int, num_cells: int, out_channels: int,
                 spatial_size: int, **kwargs) -> None:
        super().__init__(in_channels, num_mixtures, num_cells, **kwargs)
        hidden = self.fc1.out_features
        self.spatial_size = spatial_size
        self.channel_fc = nn.Linear(hidden, in_channels)
        self.filter_fc = nn.Linear(hidden, out_channels)
        self.spatial_fc = nn.Linear(hidden, spatial_size) if spatial_size > 1 else None
        for fc in (self.channel_fc, self.filter_fc, self.spatial_fc):
            if fc is not None:
                nn.init.kaiming_normal_(fc.weight, mode='fan_out', nonlinearity='relu')
                nn.init.zeros_(fc.bias)

    def _head(self, fc: Optional[nn.Linear], hidden: torch.Tensor) -> Optional[torch.Tensor]:
        if fc is None:
            return None
        a = torch.sigmoid(fc(hidden))
        t = self.temperature
        return a if t == 0.0 else t + (1.0 - t) * a

    @attention_precision
    def modulations(self, hidden: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        """Channel ``[B, Cin]``, filter ``[B, Cout]`` and spatial ``[B, k*k]`` (or None)
        attentions from the hidden vector, in the parameters' dtype (float32 under autocast)."""
        return (self._head(self.channel_fc, hidden), self._head(self.filter_fc, hidden),
                self._head(self.spatial_fc, hidden))


def kw_star_conv(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The forward of a KW layer whose attention is a :class:`KWStarAttention`."""
    att = layer.attention
    hidden = att.hidden(x)
    channel, filter_, spatial = att.modulations(hidden)
    impl = fast.get_kw_impl(layer)
    reference = impl == 'reference'
    if reference:
        alpha = att.expand(kw_attention_reference(att.logits(x, hidden), att.beta,
                                                  att.mix_temperature, att.attention_function))
    else:
        alpha = att(x, hidden)
    if spatial is not None:
        per_position = att.num_mixtures // att.spatial_size  # go * gi mixtures per position
        alpha = alpha * spatial.repeat_interleave(per_position, dim=1).unsqueeze(-1)
    view = (x.shape[0], -1) + (1, ) * (x.dim() - 2)
    # The float32 attentions of autocast scale the feature maps in the maps' own dtype.
    x = x * channel.view(view).to(x.dtype)
    conv = {'reference': kw_conv_reference, 'export': kw_conv_export}.get(impl)
    out = conv(x, alpha, layer.cells, None, layer.geometry) if conv is not None else \
        fast.kw_conv(x, alpha, layer.cells, None, layer.geometry, kw_impl=impl,
                     split_attention=att.splits_under_autocast)
    out = out * filter_.view(view).to(out.dtype)
    return out if layer.bias is None else out + layer.bias.view(1, -1, *view[2:]).to(out.dtype)


def kw_star_extra_params(in_channels: int, out_channels: int, kernel_size: tuple,
                         hidden: int) -> int:
    """Parameters KW* adds to one KW layer (for documentation and checks)."""
    spatial = math.prod(kernel_size)
    heads = (in_channels + out_channels + (spatial if spatial > 1 else 0))
    return heads * hidden + heads
