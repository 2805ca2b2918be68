"""What the rival dynamic-convolution backbones share: the methods, their paper budgets and a
conv factory with :meth:`~kw_mm.cnn.WarehouseManager.reserve`'s signature, so the ResNet and
MobileNetV2 skeletons of the KW backbones build them unchanged."""
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import torch.nn as nn

from kw_mm.cnn.dynamic import CondConv2d, DyConv2d, ODConv2d


@dataclass(frozen=True)
class DynamicMethod:
    """A rival dynamic convolution and the kernel numbers of its published models."""

    name: str
    layer: type
    num_kernels: Tuple[int, ...]
    #: The layer's keyword for ``K``.
    kernels_arg: str
    #: Keyword arguments of the layer beyond the convolution's own (attention options).
    options: Tuple[str, ...] = field(default=())


#: The rival methods of the KernelWarehouse paper: DY-Conv 4x (Tables 1-4, 10), ODConv 1x/2x/4x
#: (its release; 4x in the KW paper), CondConv 8x (Table 1).
DYNAMIC_METHODS = {
    'dyconv': DynamicMethod('dyconv', DyConv2d, (4, ), 'num_kernels',
                            ('reduction', 'attention_function')),
    'odconv': DynamicMethod('odconv', ODConv2d, (1, 2, 4), 'num_kernels',
                            ('reduction', 'attention_function')),
    'condconv': DynamicMethod('condconv', CondConv2d, (8, ), 'num_experts'),
}


def resolve_method(backbone: str, method: str, num_kernels: Optional[int],
                   allowed: Sequence[str]) -> Tuple[DynamicMethod, int]:
    """The method and kernel number, or a ValueError naming what is allowed.

    Args:
        backbone (str): The backbone class, for messages.
        method (str): The method name.
        num_kernels (int, optional): ``K``; None takes the paper's (the last listed).
        allowed (Sequence[str]): The methods the backbone defines.
    """
    if method not in allowed:
        raise ValueError(f'{backbone}: method must be one of {list(allowed)}, got {method!r}')
    spec = DYNAMIC_METHODS[method]
    if num_kernels is None:
        num_kernels = spec.num_kernels[-1]
    if num_kernels not in spec.num_kernels:
        raise ValueError(f'{backbone}: num_kernels of {method} must be one of '
                         f'{list(spec.num_kernels)}, got {num_kernels!r}')
    return spec, num_kernels


class DynamicConvFactory:
    """Builds the convolutions of a rival backbone.

    :meth:`reserve` has the signature of :meth:`kw_mm.cnn.WarehouseManager.reserve`:
    ``enabled=False`` gives a plain ``nn.Conv2d``, else the method's dynamic convolution;
    ``warehouse_name`` is ignored (rivals have no warehouses).

    Args:
        method (DynamicMethod): The method.
        num_kernels (int): ``K`` (experts for CondConv).
        **options: The layer's attention options (``reduction``, ``attention_function``);
            None values take the layer's defaults. CondConv layers are built without a router
            of their own: the backbone shares one per block.
    """

    def __init__(self, method: DynamicMethod, num_kernels: int, **options) -> None:
        unknown = {k for k, v in options.items() if v is not None} - set(method.options)
        if unknown:
            raise ValueError(f'{method.name} has no option {sorted(unknown)}; options: '
                             f'{list(method.options)}')
        self.method = method
        self.num_kernels = num_kernels
        self.options = {k: v for k, v in options.items() if v is not None}
        if method.layer is CondConv2d:
            self.options['own_router'] = False

    def reserve(self, *conv_args, warehouse_name: str = 'default', enabled: bool = True,
                **conv_kwargs) -> nn.Module:
        """``conv_args`` / ``conv_kwargs`` as ``nn.Conv2d``'s (``bias`` by keyword)."""
        if not enabled:
            return nn.Conv2d(*conv_args, **conv_kwargs)
        options = {self.method.kernels_arg: self.num_kernels, **self.options}
        return self.method.layer(*conv_args, **conv_kwargs, **options)
