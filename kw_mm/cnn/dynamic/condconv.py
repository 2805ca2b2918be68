"""CondConv: conditionally parameterized convolutions.

Yang, Bender, Le, Ngiam, "CondConv: Conditionally Parameterized Convolutions for Efficient
Inference", NeurIPS 2019. Routing weights ``r = sigmoid(Linear(GAP(x)))`` over ``K`` experts
(sigmoid, not softmax, and no temperature); ``W_b = sum_i r[b, i] * weight[i]``, biases alike.

A router can serve several layers: in CondConv networks (as in timm's CondConv blocks) one
router per residual block, fed with the block input, weights both convolutions of the block.
:class:`CondConv2d` therefore takes its routing weights either from its own router
(``own_router=True``) or from :meth:`CondConvRouter.route`, called by the owner of a shared
router before the layer runs.
"""
from typing import List, Optional

import torch
import torch.nn as nn

from ..precision import attention_precision
from .base import MixtureConv2d, global_pool


class CondConvRouter(nn.Module):
    """Sigmoid routing ``r = sigmoid(fc(GAP(x)))`` over ``K`` experts (``fc`` with bias).

    Called directly it returns ``r [B, K]``. :meth:`route` also hands ``r`` to the layers
    registered with :meth:`attach`, which use it in their next forward (and drop it then).
    """

    def __init__(self, in_channels: int, num_experts: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_experts)
        self._layers: List['CondConvMixin'] = []

    @attention_precision
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.fc.weight.dtype
        return torch.sigmoid(self.fc(global_pool(x, dtype) if x.dim() > 2 else x.to(dtype)))

    def attach(self, layer: 'CondConvMixin') -> None:
        """Let ``layer`` take its routing weights from :meth:`route` (not a submodule)."""
        self._layers.append(layer)

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the routing weights of ``x`` and hand them to the attached layers."""
        weights = self(x)
        for layer in self._layers:
            layer.routing_weights = weights
        return weights

    def route_hook(self, module: nn.Module, args: tuple) -> None:
        """A forward pre-hook for the module whose input feeds this router (a block)."""
        self.route(args[0])


class CondConvMixin:
    """Routing weights from the layer's own router or from a shared one."""

    router: Optional[CondConvRouter]
    routing_weights: Optional[torch.Tensor]

    def take_routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        if self.router is not None:
            return self.router(x)
        weights, self.routing_weights = self.routing_weights, None
        if weights is None:
            raise RuntimeError(f'{type(self).__name__} has no router of its own and no routing '
                               'weights were given: call CondConvRouter.route(x) of the shared '
                               'router before the layer (see CondConvRouter.attach)')
        return weights


class CondConv2d(CondConvMixin, MixtureConv2d):
    """CondConv 2-D convolution with ``K`` experts.

    Args:
        *conv_args, **conv_kwargs: ``in_channels, out_channels, kernel_size, stride, padding,
            dilation, groups, bias`` as ``nn.Conv2d`` (default ``bias=False``; ``True``: one
            bias per expert, mixed like the kernels); see :class:`MixtureConv2d`.
        num_experts (int): ``K``. Defaults to 8.
        own_router (bool): Route with a router of its own on the layer input; else routing
            weights come from a shared :class:`CondConvRouter`. Defaults to True.
    """

    def __init__(self, *conv_args, num_experts: int = 8, own_router: bool = True,
                 **conv_kwargs) -> None:
        super().__init__(*conv_args, num_kernels=num_experts, **conv_kwargs)
        self.router = CondConvRouter(self.in_channels, num_experts) if own_router else None
        self.routing_weights = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernels, bias = self.mix(self.take_routing_weights(x))
        return self.conv_per_sample(x, kernels, bias)


class CondLinear(CondConvMixin, nn.Module):
    """CondConv linear layer: ``y_b = (sum_i r[b,i] W_i) x_b + sum_i r[b,i] b_i``.

    Args:
        in_features (int): Input features.
        out_features (int): Output features.
        bias (bool): Expert biases. Defaults to True.
        num_experts (int): ``K``. Defaults to 8.
        own_router (bool): Route with a router of its own. Defaults to True.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 num_experts: int = 8, own_router: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.num_experts = num_experts
        self.weight = nn.Parameter(torch.empty(num_experts, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(num_experts, out_features)) if bias else None
        self.router = CondConvRouter(in_features, num_experts) if own_router else None
        self.routing_weights = None
        bound = in_features**-0.5  # nn.Linear's default range, per expert
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.take_routing_weights(x)
        out = torch.einsum('bk,koi,bi->bo', weights, self.weight, x)
        return out if self.bias is None else out + weights @ self.bias

    def extra_repr(self) -> str:
        return (f'{self.in_features}, {self.out_features}, num_experts={self.num_experts}, '
                f'bias={self.bias is not None}')
