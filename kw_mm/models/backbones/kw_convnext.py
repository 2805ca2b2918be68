"""ConvNeXt with KernelWarehouse convolutions (KW ConvNeXt).

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024; the backbone
is ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022) as in mmpretrain.

Every convolution is a KW convolution with a bias: the 4x4 stem, the three 2x2 downsamples, the
7x7 depth-wise convolutions and the point-wise convolutions (1x1 KW convolutions in channels-first
layout instead of ``nn.Linear``). The attentions use LayerNorm (and fc1 with a bias).

Two warehouse layouts:

- ``'release'``: the released ``kw1x_convnext_tiny`` (12 warehouses): one for the stem, one per
  downsample, and per stage one for the depth-wise and one for the point-wise convolutions.
  Budget 1 only; its checkpoints load after key conversion
  (:mod:`kw_mm.converters.kw_release.convnext`).
- ``'paper'``: Table 14 of the paper (16 warehouses): as ``'release'``, but the blocks of the
  third stage are split into three groups of equal size, each with its own depth-wise and
  point-wise warehouse. Budget 1 uses KW 1x everywhere; budget 3/4 applies KW 1/2x (cells of
  half the greatest common divisor, b = 1/2) to the point-wise warehouses of the last two groups
  (warehouses ``stage2.2_pw`` and ``stage3_pw``) and KW 1x elsewhere.

The expert knobs of the reference (``reduction``, the cell ratios, ``sharing_range``,
``nonlocal_basis_ratio``, ``attention_norm``) default to the layout's values and can be changed
as in :class:`~kw_mm.models.KWResNet` and :class:`~kw_mm.models.KWMobileNetV2`.
"""
import re
from collections import OrderedDict
from itertools import accumulate
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmpretrain.models.utils import build_norm_layer

from kw_mm.cnn import WarehouseManager
from kw_mm.cnn.warehouse import PerWarehouse, parse_sharing_range
from kw_mm.registry import MODELS
from .base import BaseKWBackbone, check_choice

#: State-dict keys of the per-output norms (``norm0`` ... ``norm3``).
OUTPUT_NORM = re.compile(r'^norm\d+\.')
#: The reference's sharing fields of a ConvNeXt block (``stage{i}_layer{j}_pwconv{1,2}``).
SHARING_FIELDS = ('layer', 'pwconv')


class KWConvNeXtBlock(nn.Module):
    """A ConvNeXt block whose three convolutions are KW convolutions.

    DwConv 7x7 -> LayerNorm -> PwConv (KW 1x1) -> GELU -> PwConv (KW 1x1) -> layer scale, with a
    residual connection; all in (N, C, H, W). mmpretrain's block names are kept
    (``depthwise_conv``, ``norm``, ``pointwise_conv1``, ``pointwise_conv2``, ``gamma``).

    Args:
        in_channels (int): Channels of the block.
        manager (WarehouseManager): Creates the KW convolutions.
        dw_warehouse (str): Warehouse of the depth-wise convolution.
        pw_warehouses (Sequence[str]): Warehouses of the two point-wise convolutions (the
            same name twice to share one, as released).
        norm_cfg (dict): Norm between the depth-wise and the point-wise convolutions.
        act_cfg (dict): Activation between the point-wise convolutions.
        mlp_ratio (float): Hidden width ratio of the point-wise convolutions. Defaults to 4.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        layer_scale_init_value (float): Init value of the layer scale ``gamma``; 0 disables it.
            Defaults to 1e-6.
        with_cp (bool): Use gradient checkpointing. Defaults to False.
    """

    def __init__(self,
                 in_channels: int,
                 manager: WarehouseManager,
                 dw_warehouse: str,
                 pw_warehouses: Sequence[str],
                 norm_cfg: dict,
                 act_cfg: dict,
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        mid_channels = int(mlp_ratio * in_channels)
        self.depthwise_conv = manager.reserve(in_channels, in_channels, kernel_size=7, padding=3,
                                              groups=in_channels, bias=True,
                                              warehouse_name=dw_warehouse)
        self.norm = build_norm_layer(norm_cfg, in_channels)
        self.pointwise_conv1 = manager.reserve(in_channels, mid_channels, kernel_size=1,
                                               bias=True, warehouse_name=pw_warehouses[0])
        self.act = MODELS.build(act_cfg)
        self.pointwise_conv2 = manager.reserve(mid_channels, in_channels, kernel_size=1,
                                               bias=True, warehouse_name=pw_warehouses[1])
        # mmpretrain's shape [C]; the reference stores [1, C, 1, 1] (the converter reshapes).
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(in_channels)) \
            if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.depthwise_conv(x)
        x = self.norm(x)
        x = self.pointwise_conv1(x)
        x = self.act(x)
        x = self.pointwise_conv2(x)
        if self.gamma is not None:
            x = x.mul(self.gamma.view(1, -1, 1, 1))
        return shortcut + self.drop_path(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


@MODELS.register_module()
class KWConvNeXt(BaseKWBackbone):
    """ConvNeXt backbone with KernelWarehouse convolutions.

    Module names, ``out_indices``, ``frozen_stages``, ``gap_before_final_norm`` and the output
    norms (``norm{i}`` for every index in ``out_indices``) follow mmpretrain's ``ConvNeXt``, so a
    classifier uses ``LinearClsHead(in_channels=768)`` without a neck, and mmdet uses
    ``out_indices=(0, 1, 2, 3), gap_before_final_norm=False``.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'`` or ``'base'``, or a dict with ``depths`` and
            ``channels`` (4 stages each). Defaults to ``'tiny'``.
        budget (float): The KW budget b: ``1`` (KW 1x) or ``0.75`` (KW 3/4x, ``'paper'`` layout
            only). Defaults to 1.
        layout (str): ``'paper'`` (Table 14: the third stage split into three warehouse groups)
            or ``'release'`` (the released checkpoint's 12 warehouses, budget 1 only).
            Defaults to ``'paper'``.
        out_indices (Sequence[int] | int): Stages whose (normed) outputs are returned.
            Defaults to ``(3, )``.
        frozen_stages (int): As mmpretrain's ConvNeXt: the first ``frozen_stages`` stages (each
            with the downsample layer in front of it; the stem goes with stage 0) are frozen;
            0 freezes nothing. The output norms of frozen stages are frozen too.
            Defaults to 0.
        gap_before_final_norm (bool): Average-pool each output before its norm and return
            ``[N, C]`` vectors (classification); ``False`` returns ``[N, C, H, W]`` maps
            (detection). Defaults to True.
        drop_path_rate (float): Stochastic depth rate (linear over all blocks). Defaults to 0.
        layer_scale_init_value (float): Init value of the layer scale. Defaults to 1e-6.
        norm_eval (bool): Keep BatchNorm layers in eval mode. ConvNeXt has none (its norms and
            the attention norms are LayerNorms); accepted for a uniform backbone interface.
            Defaults to False.
        freeze_warehouses (bool): Frozen stages also freeze their warehouses (ConvNeXt
            warehouses never span two stages). Defaults to True.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=...)`` loads
            strictly. Other init rules may run, but the KW attentions are re-initialized after
            them (see :meth:`init_weights`). Defaults to None.
        in_channels (int): Input image channels. Defaults to 3.
        stem_patch_size (int): Kernel size and stride of the stem. Defaults to 4.
        norm_cfg (dict): Norm layers of the network (not of the attentions).
            Defaults to ``dict(type='LN2d', eps=1e-6)``.
        act_cfg (dict): Activation of the blocks. Defaults to ``dict(type='GELU')``.
        reduction (float | dict, optional): Hidden width ratio of the KW attentions. None
            takes the preset, 1/16. Defaults to None.
        cell_num_ratio (float | dict, optional): ``b`` per warehouse. None takes the preset of
            ``budget``: 1, and for 0.75 a dict giving 1/2 to the point-wise warehouses of the
            last two groups. Defaults to None.
        cell_inplane_ratio (float | dict, optional): Cell input channels / gcd of the
            warehouse's input channels. None takes the preset, as ``cell_num_ratio``.
            Defaults to None.
        cell_outplane_ratio (float | dict, optional): The same for output channels.
            Defaults to None.
        sharing_range (Sequence[str] | str): What a warehouse shares, the reference's fields
            ``'layer'`` (the blocks of a warehouse group share one depth-wise and one
            point-wise warehouse; without it every block has its own, ``stage{i}_layer{j}_dw``)
            and ``'pwconv'`` (the two point-wise convs of a block share one warehouse,
            ``..._pw``; without it ``..._pw1`` and ``..._pw2``). The stem and every downsample
            always have their own. A reference-style string such as ``'layer_pwconv'`` is
            split at ``_``. Defaults to ``('layer', 'pwconv')``.
        nonlocal_basis_ratio (float): Below 1, the logits of other layers' cells come from a
            small shared basis (as ResNet50 KW 1/2x). Defaults to 1 (disabled, as released).
        attention_norm (str): Norm of the attentions, ``'LN'`` (LayerNorm, fc1 with a bias, as
            released) or ``'BN'``. Defaults to ``'LN'``.
        with_cp (bool): Gradient checkpointing in the blocks. Defaults to False.

    A dict value of ``reduction`` and the cell ratios maps a warehouse to its value: by full
    name (``'stage2.2_pw'``), by kind (``'stem'``, ``'downsample'``, ``'dw'``, ``'pw'``;
    ``'pw'`` also matches ``'pw1'`` and ``'pw2'``) or ``'default'``. A value given replaces the
    budget's preset of that knob entirely.

    Example:
        >>> import torch
        >>> from kw_mm.models import KWConvNeXt
        >>> model = KWConvNeXt(arch='tiny', budget=1, layout='release', out_indices=(0, 1, 2, 3),
        ...                    gap_before_final_norm=False).eval()
        >>> [tuple(out.shape)[1:] for out in model(torch.rand(1, 3, 64, 64))]
        [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]
    """

    arch_settings = {
        'tiny': dict(depths=[3, 3, 9, 3], channels=[96, 192, 384, 768]),
        'small': dict(depths=[3, 3, 27, 3], channels=[96, 192, 384, 768]),
        'base': dict(depths=[3, 3, 27, 3], channels=[128, 256, 512, 1024]),
    }
    #: Warehouse groups per stage: every group has its own depth-wise and point-wise warehouse.
    layout_settings = {
        'release': dict(stage_groups=(1, 1, 1, 1), budgets=(1.0, )),
        'paper': dict(stage_groups=(1, 1, 3, 1), budgets=(0.75, 1.0)),
    }
    restore_attention_init = True
    #: Number of trailing groups whose point-wise warehouse uses KW 1/2x (paper A.2, Table 14).
    half_pw_groups = {1.0: 0, 0.75: 2}

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 budget: float = 1.0,
                 layout: str = 'paper',
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 frozen_stages: int = 0,
                 gap_before_final_norm: bool = True,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 norm_eval: bool = False,
                 freeze_warehouses: bool = True,
                 init_cfg: Optional[dict] = None,
                 in_channels: int = 3,
                 stem_patch_size: int = 4,
                 norm_cfg: dict = dict(type='LN2d', eps=1e-6),
                 act_cfg: dict = dict(type='GELU'),
                 reduction: Optional[PerWarehouse] = None,
                 cell_num_ratio: Optional[PerWarehouse] = None,
                 cell_inplane_ratio: Optional[PerWarehouse] = None,
                 cell_outplane_ratio: Optional[PerWarehouse] = None,
                 sharing_range: Union[Sequence[str], str] = SHARING_FIELDS,
                 nonlocal_basis_ratio: float = 1.0,
                 attention_norm: str = 'LN',
                 with_cp: bool = False) -> None:
        super().__init__(out_indices, frozen_stages, norm_eval, freeze_warehouses, init_cfg)
        self.arch_name, arch = self._resolve_arch(arch)
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        check_choice('layout', layout, self.layout_settings)
        check_choice('budget', budget, self.half_pw_groups)
        allowed = self.layout_settings[layout]['budgets']
        if budget not in allowed:
            supported = ' or '.join(f'{b:g}' for b in allowed)
            raise ValueError(f'layout={layout!r} supports budget {supported}, got '
                             f"budget={budget!r}; the 3/4x model exists only in the 'paper' "
                             'layout (the release has KW 1x only)')
        sharing_range = parse_sharing_range(sharing_range)
        for field in sharing_range:
            if field not in SHARING_FIELDS:
                raise ValueError(f'sharing_range fields must be in {list(SHARING_FIELDS)}, got '
                                 f'{sharing_range!r}')
        self.depths = list(arch['depths'])
        self.channels = list(arch['channels'])
        self.budget = float(budget)
        self.layout = layout
        self.gap_before_final_norm = gap_before_final_norm
        self.sharing_range = sharing_range

        groups = self._group_sizes(self.layout_settings[layout]['stage_groups'])
        names = self._warehouse_names(groups)
        num_half = self.half_pw_groups[self.budget]
        half_groups = set(list(names.values())[len(names) - num_half:]) if num_half else set()
        # The point-wise warehouses of KW 1/2x (budget 3/4).
        half_warehouses = [pw for _, j, group in self._blocks(names, groups)
                           if group in half_groups for pw in self._block_warehouses(group, j)[1:]]
        # The knobs are resolved per warehouse (by name or kind) once every layer is reserved.
        self.warehouse_manager = WarehouseManager(
            reduction=reduction, cell_num_ratio=cell_num_ratio,
            cell_inplane_ratio=cell_inplane_ratio, cell_outplane_ratio=cell_outplane_ratio,
            sharing_range=sharing_range, nonlocal_basis_ratio=nonlocal_basis_ratio,
            norm=attention_norm, presets=self._knob_presets(half_warehouses))

        # The downsample layers are built before the stages (unlike mmpretrain's loop, with the
        # same module names) so that the warehouses are numbered as in the release: stem,
        # downsamples, then per stage depth-wise and point-wise.
        self.downsample_layers = nn.ModuleList()
        reserve = self.warehouse_manager.reserve
        self.downsample_layers.append(nn.Sequential(
            reserve(in_channels, self.channels[0], kernel_size=stem_patch_size,
                    stride=stem_patch_size, bias=True, warehouse_name='stem'),
            build_norm_layer(norm_cfg, self.channels[0])))
        for i in range(1, self.num_stages):
            self.downsample_layers.append(nn.Sequential(
                build_norm_layer(norm_cfg, self.channels[i - 1]),
                reserve(self.channels[i - 1], self.channels[i], kernel_size=2, stride=2,
                        bias=True, warehouse_name=f'downsample{i}')))

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(self.depths))]
        self.stages = nn.ModuleList()
        block_idx = 0
        for i, (depth, channels) in enumerate(zip(self.depths, self.channels)):
            blocks = []
            for j in range(depth):
                group = names[(i, self._group_of(groups[i], j))]
                dw, pw1, pw2 = self._block_warehouses(group, j)
                blocks.append(KWConvNeXtBlock(
                    channels, self.warehouse_manager,
                    dw_warehouse=dw, pw_warehouses=(pw1, pw2),
                    norm_cfg=norm_cfg, act_cfg=act_cfg,
                    drop_path_rate=dpr[block_idx + j],
                    layer_scale_init_value=layer_scale_init_value, with_cp=with_cp))
            block_idx += depth
            self.stages.append(nn.Sequential(*blocks))

        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm_layer(norm_cfg, self.channels[i]))

        self.build_warehouses()

    # ------------------------------------------------------------------ layout
    def _resolve_arch(self, arch: Union[str, dict]) -> Tuple[str, dict]:
        if isinstance(arch, str):
            check_choice('arch', arch, self.arch_settings)
            return arch, self.arch_settings[arch]
        if not isinstance(arch, dict) or not {'depths', 'channels'} <= set(arch):
            raise ValueError(f"arch must be one of {sorted(self.arch_settings)} or a dict with "
                             f"'depths' and 'channels', got {arch!r}")
        if len(arch['depths']) != self.num_stages or len(arch['channels']) != self.num_stages:
            raise ValueError(f'arch must have {self.num_stages} depths and channels, got '
                             f"depths={arch['depths']}, channels={arch['channels']}")
        return 'custom', arch

    def _group_sizes(self, stage_groups: Sequence[int]) -> List[List[int]]:
        """Blocks per warehouse group of every stage (equal sizes, earlier groups larger)."""
        sizes = []
        for depth, parts in zip(self.depths, stage_groups):
            if depth < parts:
                raise ValueError(f'layout {self.layout!r} splits a stage into {parts} warehouse '
                                 f'groups but it has only {depth} blocks (depths={self.depths})')
            sizes.append([depth // parts + (g < depth % parts) for g in range(parts)])
        return sizes

    @staticmethod
    def _group_of(sizes: List[int], block: int) -> int:
        for group, end in enumerate(accumulate(sizes)):
            if block < end:
                return group
        raise IndexError(block)

    @staticmethod
    def _warehouse_names(groups: List[List[int]]) -> Dict[Tuple[int, int], str]:
        """``stage{i}`` for an unsplit stage, ``stage{i}.{g}`` for group g of a split one."""
        names = {}
        for i, sizes in enumerate(groups):
            for g in range(len(sizes)):
                names[(i, g)] = f'stage{i}' if len(sizes) == 1 else f'stage{i}.{g}'
        return names

    def _blocks(self, names: Dict[tuple, str], groups: List[List[int]]
                ) -> Iterator[Tuple[int, int, str]]:
        """(stage, block, warehouse group) of every block, in order."""
        for i, depth in enumerate(self.depths):
            for j in range(depth):
                yield i, j, names[(i, self._group_of(groups[i], j))]

    def _block_warehouses(self, group: str, block: int) -> Tuple[str, str, str]:
        """Warehouses of a block's depth-wise and two point-wise convs (``sharing_range``).

        With the default sharing, ``{group}_dw`` and ``{group}_pw`` (the released layout);
        without ``'layer'`` the block index joins the name, without ``'pwconv'`` the two
        point-wise convs get ``_pw1`` and ``_pw2``.
        """
        prefix = group if 'layer' in self.sharing_range else f'{group}_layer{block}'
        if 'pwconv' in self.sharing_range:
            return f'{prefix}_dw', f'{prefix}_pw', f'{prefix}_pw'
        return f'{prefix}_dw', f'{prefix}_pw1', f'{prefix}_pw2'

    @staticmethod
    def _knob_presets(half_warehouses: Sequence[str]) -> Dict[str, PerWarehouse]:
        """KW 1x everywhere, KW 1/2x (half-gcd cells, b = 1/2) in ``half_warehouses``."""
        cell_ratio = dict(default=1.0, **{name: 0.5 for name in half_warehouses})
        return dict(reduction=1 / 16, cell_num_ratio=cell_ratio,
                    cell_inplane_ratio=cell_ratio, cell_outplane_ratio=cell_ratio)

    # ------------------------------------------------------------------ BaseKWBackbone hooks
    def stage_modules(self, index: int) -> List[nn.Module]:
        """Modules frozen with stage ``index - 1`` (as mmpretrain's ConvNeXt counts them).

        Index 0 is empty: the stem belongs to stage 0. Index ``i >= 1`` is stage ``i - 1`` with
        the downsample layer in front of it and, unlike mmpretrain's ConvNeXt, its output norm
        (if it is an output), so the outputs of frozen stages stay fixed.
        """
        if not 0 <= index <= self.num_stages:
            raise IndexError(f'stage index must be in [0, {self.num_stages}], got {index}')
        if index == 0:
            return []
        modules = [self.downsample_layers[index - 1], self.stages[index - 1]]
        if hasattr(self, f'norm{index - 1}'):
            modules.append(getattr(self, f'norm{index - 1}'))
        return modules

    def variant_name(self) -> str:
        return (f'KWConvNeXt(arch={self.arch_name!r}, budget={self.budget:g}, '
                f'layout={self.layout!r})')

    def adapt_pretrained_state(self, state: Dict) -> Dict:
        """Let a checkpoint with other outputs load: output norms it lacks keep their init.

        A classifier checkpoint has only ``norm3`` (after pooling); a detection backbone
        (``out_indices=(0, 1, 2, 3)``) adds ``norm0``-``norm2``, new layers as with mmpretrain's
        ConvNeXt under mmdet. Norms of outputs this backbone does not have are dropped. Every
        other tensor still loads strictly.
        """
        own = self.state_dict()
        adapted = OrderedDict((k, v) for k, v in state.items()
                              if not (OUTPUT_NORM.match(k) and k not in own))
        new = [k for k in own if OUTPUT_NORM.match(k) and k not in state]
        for key in new:
            adapted[key] = own[key]
        if new:
            names = sorted({k.split('.')[0] for k in new})
            print_log(f'{self.variant_name()}: output norms {names} are not in the checkpoint '
                      'and keep their initialization', logger='current')
        return adapted

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = {}
        for i, stage in enumerate(self.stages):
            x = stage(self.downsample_layers[i](x))
            if i in self.out_indices:
                norm = getattr(self, f'norm{i}')
                if self.gap_before_final_norm:
                    outs[i] = norm(x.mean([-2, -1], keepdim=True)).flatten(1)
                else:
                    outs[i] = norm(x)
        return self.collect_outputs(outs)
