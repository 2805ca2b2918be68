"""KernelWarehouse convolution and linear layers.

A KW layer owns no kernel: it owns an attention (built when its warehouse is allocated) and draws
its per-sample kernel from the cells of a warehouse held by a
:class:`~kw_mm.cnn.warehouse.WarehouseManager`. Layers are created through
``WarehouseManager.reserve`` and become usable after ``store()`` and ``allocate(model)``.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from . import fast
from .attention import KWAttention
from .export import Epilogue, kw_conv_export
from .functional import KWGeometry, kw_attention_reference, kw_conv_reference
from .kw_star import KWStarAttention, kw_star_conv
from .plan import check_kw_impl

IntOrTuple = Union[int, Sequence[int]]


def _ntuple(value: IntOrTuple, n: int, name: str) -> Tuple[int, ...]:
    if isinstance(value, int):
        return (value, ) * n
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return value * n
    if len(value) != n:
        raise ValueError(f'{name} must be an int or {n} ints, got {value}')
    return value


class KWConvNd(nn.Module):
    """Base class of the KW convolutions; subclasses set ``dim``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int | tuple): Kernel size of the static convolution it replaces.
        stride, padding, dilation (int | tuple): As ``nn.Conv{dim}d``.
        groups (int): As ``nn.Conv{dim}d``. Defaults to 1.
        bias (bool): Add a learned bias. Defaults to False.
        warehouse_name (str): The warehouse it draws its cells from (set by the manager).
        kw_impl (str): How it runs (:data:`~kw_mm.cnn.plan.KW_IMPLS`): ``'auto'`` (its plan,
            :mod:`kw_mm.cnn.plan`), ``'reference'``, ``'export'`` or a fast path's name
            (forced where it applies). A :class:`~kw_mm.cnn.fast.use_kw_impl` block overrides
            it; :func:`~kw_mm.cnn.fast.apply_kw_impl` sets it on every layer of a model.
            Defaults to ``'auto'``.
    """

    dim: int = 0

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: IntOrTuple,
                 stride: IntOrTuple = 1,
                 padding: IntOrTuple = 0,
                 dilation: IntOrTuple = 1,
                 groups: int = 1,
                 bias: bool = False,
                 warehouse_name: str = 'default',
                 kw_impl: str = 'auto') -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f'in_channels ({in_channels}) and out_channels ({out_channels}) '
                             f'must be divisible by groups ({groups})')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _ntuple(kernel_size, self.dim, 'kernel_size')
        self.stride = _ntuple(stride, self.dim, 'stride')
        self.padding = _ntuple(padding, self.dim, 'padding')
        self.dilation = _ntuple(dilation, self.dim, 'dilation')
        self.groups = groups
        self.warehouse_name = warehouse_name
        self.kw_impl = check_kw_impl(kw_impl)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.geometry: Optional[KWGeometry] = None
        self._owner: list = []
        self.warehouse_index: int = -1

    @property
    def owner(self) -> Optional[nn.Module]:
        """The WarehouseManager that reserved this layer (None for a free-standing layer)."""
        return self._owner[0] if self._owner else None

    def set_owner(self, manager: nn.Module) -> None:
        """Record the WarehouseManager this layer draws from.

        A list keeps the manager out of this module's children: it is registered once, by the
        model that owns it, so its cells are saved once.
        """
        self._owner = [manager]

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def bind(self, manager: nn.Module, warehouse_index: int, cell_out: int, cell_in: int,
             attention: KWAttention) -> None:
        """Attach this layer to its warehouse (called by ``WarehouseManager.allocate``)."""
        self.set_owner(manager)
        self.warehouse_index = warehouse_index
        self.geometry = KWGeometry(self.dim, self.in_channels, self.out_channels,
                                   self.kernel_size, self.stride, self.padding, self.dilation,
                                   self.groups, cell_out, cell_in)
        self.attention = attention

    @property
    def cells(self) -> torch.Tensor:
        """The warehouse this layer draws from: ``[n, co, ci, 1, ...]``."""
        if self.geometry is None:
            raise RuntimeError(f'{type(self).__name__} in warehouse {self.warehouse_name!r} is '
                               'not allocated: call WarehouseManager.store() and allocate(model)')
        return self._owner[0].weights[self.warehouse_index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Set only while an export-time transform folds the next layers into this one
        # (kw_mm.deployment.export_fold); training and evaluation never see it.
        epilogue: Optional[Epilogue] = self.__dict__.get('export_epilogue')
        impl = fast.get_kw_impl(self)
        if impl == 'export' and epilogue is not None:
            return kw_conv_export(x, self.attention(x), self.cells, self.bias, self.geometry,
                                  epilogue)
        out = self._forward(x, impl)
        return out if epilogue is None else epilogue.apply(out, self.bias)

    def _forward(self, x: torch.Tensor, impl: str) -> torch.Tensor:
        cells = self.cells
        if isinstance(self.attention, KWStarAttention):  # KW* (with ODConv's attentions)
            return kw_star_conv(self, x)
        if impl == 'reference':
            att = self.attention
            alpha = att.expand(kw_attention_reference(att.logits(x), att.beta, att.mix_temperature,
                                                      att.attention_function))
            return kw_conv_reference(x, alpha, cells, self.bias, self.geometry)
        if impl == 'export':
            return kw_conv_export(x, self.attention(x), cells, self.bias, self.geometry)
        manager, index = self._owner[0], self.warehouse_index
        return fast.kw_conv(x, self.attention(x), cells, self.bias, self.geometry,
                            transposed_cells=lambda: manager.transposed_cells(index),
                            kw_impl=impl,
                            split_attention=self.attention.splits_under_autocast)

    def extra_repr(self) -> str:
        s = (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, '
             f'stride={self.stride}, padding={self.padding}')
        if self.dilation != (1, ) * self.dim:
            s += f', dilation={self.dilation}'
        if self.groups != 1:
            s += f', groups={self.groups}'
        if self.kw_impl != 'auto':
            s += f', kw_impl={self.kw_impl!r}'
        if self.bias is None:
            s += ', bias=False'
        return s + f', warehouse={self.warehouse_name!r}'


class KWConv1d(KWConvNd):
    """KernelWarehouse ``nn.Conv1d``."""
    dim = 1


class KWConv2d(KWConvNd):
    """KernelWarehouse ``nn.Conv2d``."""
    dim = 2


class KWConv3d(KWConvNd):
    """KernelWarehouse ``nn.Conv3d``."""
    dim = 3


class KWLinear(nn.Module):
    """KernelWarehouse ``nn.Linear``: a KW 1-D convolution of kernel size 1 over tokens.

    The input ``[..., in_features]`` is treated as a sequence of tokens; the attention pools over
    the tokens of each sample (for a ``[B, C]`` input, a single token).

    Args:
        in_features (int): Input features.
        out_features (int): Output features.
        bias (bool): Add a learned bias. Defaults to True.
        warehouse_name (str): The warehouse it draws its cells from.
        kw_impl (str): As :class:`KWConvNd`. Defaults to ``'auto'``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 warehouse_name: str = 'default', kw_impl: str = 'auto') -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.conv = KWConv1d(in_features, out_features, 1, bias=bias,
                             warehouse_name=warehouse_name, kw_impl=kw_impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(shape[0], -1, shape[-1]).transpose(1, 2)
        out = self.conv(tokens).transpose(1, 2)
        return out.reshape(*shape[:-1], self.out_features)


KW_LAYERS = {'conv1d': KWConv1d, 'conv2d': KWConv2d, 'conv3d': KWConv3d, 'linear': KWLinear}
