"""MobileNetV2 with KernelWarehouse convolutions (the paper's KW 1/2x, 1x and 4x MobileNetV2).

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024, Table 4 and
appendix A.3 ("Design details of KernelWarehouse on MobileNetV2").

The module tree is mmpretrain's ``MobileNetV2`` (``conv1``, ``layer1`` .. ``layer7`` by channel
group, ``conv2``; blocks with ``conv.{0,1,2}.{conv,bn}``), so out_indices, frozen_stages and the
checkpoint keys read the same. The warehouses follow the reference release number for number.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmpretrain.models.utils import make_divisible

from kw_mm.cnn import WarehouseManager
from kw_mm.cnn.warehouse import KNOB_DEFAULTS, PerWarehouse
from kw_mm.registry import MODELS
from .base import BaseKWBackbone, check_choice


#: Activations without an ``inplace`` argument (the list mmcv's ConvModule uses).
NO_INPLACE_ACTIVATIONS = ('Tanh', 'PReLU', 'Sigmoid', 'HSigmoid', 'Swish', 'GELU')


class KWConvModule(nn.Module):
    """Conv -> norm -> activation with mmcv ``ConvModule``'s child names (conv, bn, activate).

    mmcv's ConvModule builds its own ``nn.Conv2d``; a KW conv must come from a
    :class:`WarehouseManager`, so the conv is built by the caller and handed in.

    Args:
        conv (nn.Module): A ``KWConv2d`` or ``nn.Conv2d`` (without bias).
        norm_cfg (dict): Config of the norm layer. Defaults to ``dict(type='BN')``.
        act_cfg (dict, optional): Config of the activation; None for none.
            Defaults to ``dict(type='ReLU6')``.
    """

    def __init__(self,
                 conv: nn.Module,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU6')) -> None:
        super().__init__()
        self.conv = conv
        self.norm_name, norm = build_norm_layer(norm_cfg, conv.out_channels)
        self.add_module(self.norm_name, norm)
        self.with_activation = act_cfg is not None
        if self.with_activation:
            act_cfg = dict(act_cfg)
            # In place, as ConvModule does: a fresh output per activation costs a large
            # allocation (and its page faults) per layer.
            if act_cfg['type'] not in NO_INPLACE_ACTIVATIONS:
                act_cfg.setdefault('inplace', True)
            self.activate = build_activation_layer(act_cfg)

    @property
    def norm(self) -> nn.Module:
        return getattr(self, self.norm_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv(x))
        return self.activate(x) if self.with_activation else x


class KWInvertedResidual(BaseModule):
    """MobileNetV2's inverted residual block whose convs draw from warehouses.

    Expansion point-wise conv (``pwconv0``, absent for ``expand_ratio == 1``), depth-wise 3x3 conv
    (``dwconv0``) and projection point-wise conv (``pwconv1``), named
    ``{warehouse_prefix}_{kind}`` in the :class:`WarehouseManager`.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the depth-wise conv, 1 or 2.
        expand_ratio (int): Hidden channels = round(in_channels * expand_ratio).
        warehouse_manager (WarehouseManager): Reserves the convs.
        warehouse_prefix (str): Warehouse name prefix, ``stage{s}_layer{l}``.
        kw_pwconv (bool): Point-wise convs are KW convs; else ``nn.Conv2d``. Defaults to True.
        norm_cfg (dict): Norm config. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation config. Defaults to ``dict(type='ReLU6')``.
        with_cp (bool): Use gradient checkpointing. Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int,
                 expand_ratio: int,
                 warehouse_manager: WarehouseManager,
                 warehouse_prefix: str,
                 kw_pwconv: bool = True,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU6'),
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if stride not in (1, 2):
            raise ValueError(f'stride must be 1 or 2, got {stride}')
        self.stride = stride
        self.with_cp = with_cp
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = int(round(in_channels * expand_ratio))

        def conv(cin: int, cout: int, kernel: int, kind: str, groups: int = 1,
                 enabled: bool = True) -> nn.Module:
            return warehouse_manager.reserve(
                cin, cout, kernel, stride=stride if kind == 'dwconv0' else 1,
                padding=kernel // 2, groups=groups, bias=False,
                warehouse_name=f'{warehouse_prefix}_{kind}', enabled=enabled)

        layers = []
        if expand_ratio != 1:
            layers.append(KWConvModule(conv(in_channels, hidden, 1, 'pwconv0', enabled=kw_pwconv),
                                       norm_cfg, act_cfg))
        layers.append(KWConvModule(conv(hidden, hidden, 3, 'dwconv0', groups=hidden), norm_cfg,
                                   act_cfg))
        layers.append(KWConvModule(conv(hidden, out_channels, 1, 'pwconv1', enabled=kw_pwconv),
                                   norm_cfg, act_cfg=None))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:

        def _inner_forward(x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(_inner_forward, x, use_reentrant=False)
        return _inner_forward(x)


class MobileNetV2Skeleton(BaseKWBackbone):
    """The MobileNetV2 every kw_mm MobileNetV2 shares: mmpretrain's module tree and stages.

    ``conv1``, ``layer1`` .. ``layer7`` (inverted residuals by channel group, with
    ``conv.{0,1,2}.{conv,bn}``) and ``conv2``, so out_indices, frozen_stages and checkpoint
    keys read as mmpretrain's. :meth:`build_network` takes a conv factory (an object with
    :meth:`WarehouseManager.reserve`'s signature) that decides what each convolution is.

    Args:
        widen_factor (float): Width multiplier, 1.0 or 0.5 (the released models).
            Defaults to 1.0.
        out_indices (Sequence[int]): Outputs of ``layer1`` .. ``layer7`` (0..6) and ``conv2``
            (7). Defaults to ``(7, )``.
        frozen_stages (int): ``conv1`` (>= 0) and ``layer1`` .. ``layer{frozen_stages}`` are
            frozen; -1 freezes nothing. Range -1..7, as mmpretrain. Defaults to -1.
        norm_cfg (dict): Norm config of the convs. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation config. Defaults to ``dict(type='ReLU6')``.
        norm_eval (bool): Keep BatchNorm layers (attention BNs included) in eval mode.
            Defaults to False.
        with_cp (bool): Gradient checkpointing in the blocks. Defaults to False.
        init_cfg (dict, optional): A ``Pretrained`` init loads strictly. Defaults to None.
        **kwargs: More :class:`BaseKWBackbone` arguments (``freeze_warehouses``).
    """

    # expand_ratio, channels, num_blocks, stride of layer1 .. layer7 (as mmpretrain).
    arch_settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                     [6, 160, 3, 2], [6, 320, 1, 1]]
    # Warehouse stage of each channel group (the reference's kw_stage_setting): the single
    # 320-channel block shares the last stage's warehouses.
    warehouse_stages = (1, 2, 3, 4, 5, 6, 6)
    widen_factors = (0.5, 1.0)
    # out_indices 0..6 are layer1..layer7, 7 is conv2.
    num_stages = 8

    def __init__(self,
                 widen_factor: float = 1.0,
                 out_indices: Sequence[int] = (7, ),
                 frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU6'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        check_choice('widen_factor', widen_factor, self.widen_factors)
        # mmpretrain's MobileNetV2 freezes at most layer7 (conv2 is never frozen).
        if frozen_stages not in range(-1, self.num_stages):
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages - 1}], got '
                             f'{frozen_stages!r}')
        super().__init__(out_indices, frozen_stages, norm_eval=norm_eval, init_cfg=init_cfg,
                         **kwargs)
        self.widen_factor = widen_factor
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.with_cp = with_cp

    def build_network(self, factory, stem_dynamic: bool, pwconv_stages: Sequence[int]) -> None:
        """Build every layer through ``factory.reserve`` and initialize the plain ones.

        The width, norm, activation and checkpointing are the constructor's.

        Args:
            factory: A :class:`WarehouseManager` or another conv factory with its
                ``reserve(in, out, kernel, stride, padding, groups, bias, warehouse_name,
                enabled)``.
            stem_dynamic (bool): Whether ``conv1`` is a dynamic (factory) convolution.
            pwconv_stages (Sequence[int]): Warehouse stages whose point-wise convs (and, for
                the last stage, ``conv2``) are dynamic.
        """
        widen_factor, norm_cfg, act_cfg = self.widen_factor, self.norm_cfg, self.act_cfg
        last_stage = self.warehouse_stages[-1]
        self.in_channels = make_divisible(32 * widen_factor, 8)
        self.conv1 = KWConvModule(
            factory.reserve(3, self.in_channels, 3, stride=2, padding=1, bias=False,
                            warehouse_name='stage0_conv0', enabled=stem_dynamic),
            norm_cfg, act_cfg)

        self.layers: List[str] = []
        blocks_in_stage = [0] * (last_stage + 1)
        for i, (expand_ratio, channels, num_blocks, stride) in enumerate(self.arch_settings):
            out_channels = make_divisible(channels * widen_factor, 8)
            blocks = []
            for j in range(num_blocks):
                stage = self.warehouse_stages[i]
                if j == 0 and i > 0:
                    # Handover: a channel group's first block stays with the previous stage.
                    stage = self.warehouse_stages[i - 1]
                prefix = f'stage{stage}_layer{blocks_in_stage[stage]}'
                blocks_in_stage[stage] += 1
                blocks.append(KWInvertedResidual(
                    self.in_channels, out_channels, stride if j == 0 else 1, expand_ratio,
                    factory, prefix,
                    kw_pwconv=stage in pwconv_stages, norm_cfg=norm_cfg,
                    act_cfg=act_cfg, with_cp=self.with_cp))
                self.in_channels = out_channels
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            self.layers.append(f'layer{i + 1}')

        self.out_channel = int(1280 * widen_factor) if widen_factor > 1.0 else 1280
        self.conv2 = KWConvModule(
            factory.reserve(
                self.in_channels, self.out_channel, 1, bias=False,
                warehouse_name=f'stage{last_stage}_layer{blocks_in_stage[last_stage]}_pwconv1',
                enabled=last_stage in pwconv_stages), norm_cfg, act_cfg)
        self.layers.append('conv2')

        self._init_plain_layers()

    def stage_modules(self, index: int) -> List[nn.Module]:
        """0 is ``conv1``, 1..7 are ``layer1`` .. ``layer7`` (as mmpretrain's frozen_stages)."""
        if index == 0:
            return [self.conv1]
        return [getattr(self, f'layer{index}')]

    def forward(self, x: torch.Tensor) -> tuple:
        x = self.conv1(x)
        outs = {}
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs[i] = x
        return self.collect_outputs(outs)


@MODELS.register_module()
class KWMobileNetV2(MobileNetV2Skeleton):
    """MobileNetV2 backbone with KernelWarehouse convolutions.

    A drop-in for mmpretrain's ``MobileNetV2`` (same stages, out_indices, frozen_stages and
    module names) whose convolutions share per-stage warehouses, laid out as the reference
    release (OSVAI/KernelWarehouse) for the paper's three budgets:

    - ``budget=1`` (KW 1x): every conv is a KW conv; per stage one warehouse for the depth-wise
      convs and one for all point-wise convs (``sharing_range=('layer', 'pwconv')``).
    - ``budget=4`` (KW 4x): every conv is a KW conv; per stage three warehouses: depth-wise,
      expansion point-wise (``pwconv0``) and projection point-wise (``pwconv1``, which also
      holds ``conv2``).
    - ``budget=0.5`` (KW 1/2x, paper A.3): a different design. KW convs only for the stem, the
      depth-wise convs (b=1, cells of the gcd) and the point-wise convs of the last stage
      (b=1/2, cells of half the gcd); the other point-wise convs stay ``nn.Conv2d``. Attention
      reduction 1/32. The classifier is a KW linear layer too: use
      :class:`~kw_mm.models.heads.KWLinearClsHead`.

    Warehouse stages (the ``stage{s}`` of a warehouse name) follow the reference: channel groups
    1..6 are stages 1..6, the 320-channel group joins stage 6, and the first block of every
    channel group (the transition block) belongs to the previous stage, e.g. ``layer2.0`` draws
    from stage 1. ``conv2`` joins the last stage's projection point-wise warehouse.

    Args:
        widen_factor (float): Width multiplier, 1.0 or 0.5. Defaults to 1.0.
        budget (float): The paper's convolutional parameter budget ``b``: 0.5, 1 or 4.
            Defaults to 1.
        freeze_warehouses (bool): Frozen stages also freeze their warehouses (see
            :class:`BaseKWBackbone`). Defaults to True.
        reduction (float | dict, optional): Attention hidden ratio. None takes the budget's
            preset (1/16; 1/32 for 0.5). Defaults to None.
        cell_num_ratio (float | dict, optional): ``b`` per warehouse. None takes ``budget``
            (for 0.5: 1/2 for point-wise warehouses, 1 otherwise). Defaults to None.
        cell_inplane_ratio (float | dict, optional): Cell input channels / gcd. None takes the
            preset (1; for 0.5: 1/2 for point-wise warehouses). Defaults to None.
        cell_outplane_ratio (float | dict, optional): Cell output channels / gcd, as
            ``cell_inplane_ratio``. Defaults to None.
        sharing_range (Sequence[str], optional): Warehouse name fields to merge (see
            :class:`WarehouseManager`). None takes the preset: ``('layer', 'pwconv')`` for 1,
            ``('layer', )`` for 4 and 0.5. Defaults to None.
        kw_pwconv_stages (Sequence[int], optional): Warehouse stages (1-6) whose point-wise
            convs are KW convs; the others are ``nn.Conv2d``. None takes the preset: all for
            1 and 4, ``(6, )`` for 0.5. Defaults to None.
        attention_norm (str): Attention norm, ``'BN'`` or ``'LN'``. Defaults to ``'BN'``.
        omni_attention (bool): KW* (paper Table 17): every KW attention also computes ODConv's
            channel, filter and spatial attentions (:mod:`kw_mm.cnn.kw_star`). Defaults to
            False.
        **kwargs: mmpretrain MobileNetV2's ``out_indices`` (default ``(7, )``),
            ``frozen_stages`` (-1), ``norm_cfg``, ``act_cfg``, ``norm_eval`` (attention BNs
            included), ``with_cp`` and ``init_cfg``: see :class:`MobileNetV2Skeleton`. A
            ``dict(type='Pretrained', checkpoint=..., prefix=...)`` init loads strictly;
            weights are otherwise initialized at construction (kaiming fan_out, as mmpretrain).

    A dict value of ``reduction`` and the cell ratios maps a warehouse to its value: by full
    name (``'stage6_layer_pwconv1'``), by kind (``'conv0'``, ``'dwconv0'``, ``'pwconv0'``,
    ``'pwconv1'``; ``'pwconv'`` matches both point-wise kinds) or ``'default'``.

    Example:
        >>> import torch
        >>> from kw_mm.models import KWMobileNetV2
        >>> model = KWMobileNetV2(budget=1, out_indices=(2, 4, 7)).eval()
        >>> for out in model(torch.rand(1, 3, 64, 64)):
        ...     print(tuple(out.shape))
        (1, 32, 8, 8)
        (1, 96, 4, 4)
        (1, 1280, 2, 2)
    """

    budget_settings: Dict[float, dict] = {
        0.5: dict(reduction=1 / 32,
                  cell_num_ratio=dict(pwconv=0.5, default=1.0),
                  cell_inplane_ratio=dict(pwconv=0.5, default=1.0),
                  cell_outplane_ratio=dict(pwconv=0.5, default=1.0),
                  sharing_range=('layer', ),
                  kw_pwconv_stages=(6, )),
        1: dict(reduction=1 / 16, cell_num_ratio=1.0, cell_inplane_ratio=1.0,
                cell_outplane_ratio=1.0, sharing_range=('layer', 'pwconv'),
                kw_pwconv_stages=None),
        4: dict(reduction=1 / 16, cell_num_ratio=4.0, cell_inplane_ratio=1.0,
                cell_outplane_ratio=1.0, sharing_range=('layer', ), kw_pwconv_stages=None),
    }

    def __init__(self,
                 widen_factor: float = 1.0,
                 budget: float = 1,
                 freeze_warehouses: bool = True,
                 reduction: Optional[PerWarehouse] = None,
                 cell_num_ratio: Optional[PerWarehouse] = None,
                 cell_inplane_ratio: Optional[PerWarehouse] = None,
                 cell_outplane_ratio: Optional[PerWarehouse] = None,
                 sharing_range: Optional[Sequence[str]] = None,
                 kw_pwconv_stages: Optional[Sequence[int]] = None,
                 attention_norm: str = 'BN',
                 omni_attention: bool = False,
                 **kwargs) -> None:
        check_choice('budget', budget, self.budget_settings)
        super().__init__(widen_factor, freeze_warehouses=freeze_warehouses, **kwargs)
        preset = self.budget_settings[budget]
        self.budget = budget
        last_stage = self.warehouse_stages[-1]
        if kw_pwconv_stages is None:
            kw_pwconv_stages = preset['kw_pwconv_stages']
        if kw_pwconv_stages is None:
            kw_pwconv_stages = tuple(range(1, last_stage + 1))
        for stage in kw_pwconv_stages:
            if stage not in range(1, last_stage + 1):
                raise ValueError(f'kw_pwconv_stages must hold warehouse stages in [1, '
                                 f'{last_stage}], got {tuple(kw_pwconv_stages)}')
        self.kw_pwconv_stages = tuple(kw_pwconv_stages)
        if sharing_range is None:
            sharing_range = preset['sharing_range']
        # The knobs are resolved per warehouse (by name or kind) once every layer is reserved.
        self.warehouse_manager = WarehouseManager(
            reduction=reduction, cell_num_ratio=cell_num_ratio,
            cell_inplane_ratio=cell_inplane_ratio, cell_outplane_ratio=cell_outplane_ratio,
            sharing_range=sharing_range, norm=attention_norm,
            presets={knob: preset[knob] for knob in KNOB_DEFAULTS},
            omni_attention=omni_attention)
        self.build_network(self.warehouse_manager, stem_dynamic=True,
                           pwconv_stages=self.kw_pwconv_stages)
        self.build_warehouses()

    def variant_name(self) -> str:
        star = ', omni_attention=True (KW*)' if self.warehouse_manager.omni_attention else ''
        return (f'KWMobileNetV2(widen_factor={self.widen_factor}, budget={self.budget:g}'
                f'{star})')
