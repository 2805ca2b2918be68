"""MobileNetV2 with the paper's rival dynamic convolutions: DY-Conv and ODConv.

The skeleton and module names are those of :class:`KWMobileNetV2` (mmpretrain's names). Every
convolution is dynamic except the 3x3 stem ``conv1`` (see ``dynamic_stem``): the expansion,
depth-wise and projection convolutions of every block and the final 1x1 ``conv2`` (DY-Conv and
the ODConv release alike; ODConv's depth-wise layers have no filter attention and its 1x1 layers
no spatial attention).
"""
from typing import Optional, Sequence

from kw_mm.registry import MODELS
from .base import check_choice
from .dynamic_base import DynamicConvFactory, resolve_method
from .kw_mobilenet_v2 import MobileNetV2Skeleton


@MODELS.register_module()
class DynamicMobileNetV2(MobileNetV2Skeleton):
    """MobileNetV2 backbone with DY-Conv or ODConv layers.

    Args:
        method (str): ``'dyconv'`` or ``'odconv'``.
        widen_factor (float): 1.0 or 0.5. Defaults to 1.0.
        num_kernels (int, optional): ``K``: 4 for DY-Conv, 1, 2 or 4 for ODConv. None takes
            4. Defaults to None.
        out_indices (Sequence[int]): Outputs of ``layer1`` .. ``layer7`` (0..6) and ``conv2``
            (7). Defaults to ``(7, )``.
        frozen_stages (int): ``conv1`` (>= 0) and ``layer1`` .. ``layer{frozen_stages}`` are
            frozen; -1 freezes nothing. Defaults to -1.
        norm_cfg (dict): Norm config. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation config. Defaults to ``dict(type='ReLU6')``.
        norm_eval (bool): Keep BatchNorms (attention BNs included) in eval mode.
            Defaults to False.
        with_cp (bool): Gradient checkpointing in the blocks. Defaults to False.
        reduction (float, optional): Attention hidden ratio; None takes the method's.
            Defaults to None.
        attention_function (str, optional): ``'softmax'`` or ``'caf'``. Defaults to None
            (softmax).
        dynamic_stem (bool): Make the 3x3 stem dynamic too. Not in the ODConv release (its
            checkpoints have a static stem); the only single change found that gives the
            11.52M the papers print for ODConv 4x MobileNetV2 1.0 (the release: 11.51M) while
            keeping every other printed count, so a guess. Defaults to False.
        init_cfg (dict, optional): A ``Pretrained`` init loads strictly. Defaults to None.

    Example:
        >>> import torch
        >>> from kw_mm.models import DynamicMobileNetV2
        >>> model = DynamicMobileNetV2(method='dyconv').eval()
        >>> tuple(model(torch.rand(1, 3, 64, 64))[0].shape)
        (1, 1280, 2, 2)
    """

    methods = ('dyconv', 'odconv')

    def __init__(self,
                 method: str,
                 widen_factor: float = 1.0,
                 num_kernels: Optional[int] = None,
                 out_indices: Sequence[int] = (7, ),
                 frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU6'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 reduction: Optional[float] = None,
                 attention_function: Optional[str] = None,
                 dynamic_stem: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        check_choice('widen_factor', widen_factor, self.widen_factors)
        spec, num_kernels = resolve_method(type(self).__name__, method, num_kernels,
                                           self.methods)
        super().__init__(out_indices, frozen_stages, norm_eval=norm_eval, init_cfg=init_cfg)
        self.method = method
        self.widen_factor = widen_factor
        self.num_kernels = num_kernels
        self.with_cp = with_cp
        factory = DynamicConvFactory(spec, num_kernels, reduction=reduction,
                                     attention_function=attention_function)
        every_stage = tuple(range(1, self.warehouse_stages[-1] + 1))
        self.build_network(factory, widen_factor, norm_cfg, act_cfg, with_cp,
                           stem_dynamic=dynamic_stem, pwconv_stages=every_stage)
        self._freeze_stages()

    def variant_name(self) -> str:
        return (f'DynamicMobileNetV2(method={self.method!r}, widen_factor={self.widen_factor}, '
                f'num_kernels={self.num_kernels})')
