"""ResNet with KernelWarehouse convolutions (KW ResNet18/34/50/101/152).

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024.

The layout reproduces the reference release (OSVAI/KernelWarehouse) exactly, so that its ImageNet
checkpoints load and every warehouse has the m, n and cell shape of ``layouts.json`` / Table 14:

- the stem convolution stays a normal convolution;
- one warehouse per stage, with a *handover*: the first block of stage ``s + 1`` puts its ``conv1``
  and its strided downsample into the warehouse of stage ``s``;
- in ResNets with Bottleneck blocks, ``layer1.0.conv1`` and the stride-1 downsample of ``layer1``
  stay normal convolutions;
- module names equal mmpretrain's / torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv2``,
  ``layer2.0.downsample.0`` ...) plus ``warehouse_manager``.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath

from kw_mm.cnn import WarehouseManager
from kw_mm.cnn.warehouse import parse_sharing_range
from kw_mm.registry import MODELS
from .base import BaseKWBackbone, check_choice


def kw_or_plain_conv(manager: WarehouseManager, in_channels: int, out_channels: int,
                     kernel_size: int, stride: int, warehouse: Optional[str]) -> nn.Module:
    """A bias-free ``kernel_size`` convolution: KW in ``warehouse``, or plain if it is None."""
    return manager.reserve(in_channels, out_channels, kernel_size, stride=stride,
                           padding=kernel_size // 2, bias=False,
                           warehouse_name=warehouse or 'plain', enabled=warehouse is not None)


class _KWResidualBlock(nn.Module):
    """What both ResNet blocks share: their arguments, the residual branch's ReLU, projection and
    stochastic depth. Subclasses build their convolutions and norms (:meth:`build_branch`) and
    compute the branch (:meth:`branch`).

    Args:
        manager (WarehouseManager): Creates the convolutions.
        in_channels (int): Input channels.
        planes (int): Channels of the block's convolutions; the output has
            ``expansion * planes``.
        warehouses (Sequence[str | None]): Warehouse of each convolution (conv1, conv2[, conv3]);
            None keeps a normal convolution.
        stride (int): Stride of the 3x3 convolution (pytorch style, as the reference and
            mmpretrain) and of the downsample. Defaults to 1.
        downsample (nn.Module, optional): Projection of the identity. Defaults to None.
        drop_path_rate (float): Stochastic depth of the residual branch. Defaults to 0.
        norm_cfg (dict): Norm layers. Defaults to ``dict(type='BN')``.
        with_cp (bool): Recompute the block in the backward pass instead of keeping its
            activations (non-reentrant ``torch.utils.checkpoint``, the random state of drop
            path restored). Defaults to False.
    """

    expansion = 1

    def __init__(self,
                 manager: WarehouseManager,
                 in_channels: int,
                 planes: int,
                 warehouses: Sequence[Optional[str]],
                 stride: int = 1,
                 downsample: Optional[nn.Module] = None,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        # Convolutions first: the module order is the reservation and cell-assignment order.
        self.build_branch(manager, in_channels, planes, warehouses, stride, norm_cfg)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def build_branch(self, manager: WarehouseManager, in_channels: int, planes: int,
                     warehouses: Sequence[Optional[str]], stride: int, norm_cfg: dict) -> None:
        raise NotImplementedError

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return identity + self.drop_path(self.branch(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            # Non-reentrant: parameters reached only inside the block (warehouses, attentions)
            # get their gradients although the block input may not need one.
            out = cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        else:
            out = self._inner_forward(x)
        return self.relu(out)


class KWBasicBlock(_KWResidualBlock):
    """ResNet BasicBlock (two 3x3 convolutions) whose convolutions draw from warehouses (the
    arguments of :class:`_KWResidualBlock`)."""

    expansion = 1

    def build_branch(self, manager: WarehouseManager, in_channels: int, planes: int,
                     warehouses: Sequence[Optional[str]], stride: int, norm_cfg: dict) -> None:
        self.conv1 = kw_or_plain_conv(manager, in_channels, planes, 3, stride, warehouses[0])
        self.bn1 = build_norm_layer(norm_cfg, planes)[1]
        self.conv2 = kw_or_plain_conv(manager, planes, planes, 3, 1, warehouses[1])
        self.bn2 = build_norm_layer(norm_cfg, planes)[1]

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class KWBottleneck(_KWResidualBlock):
    """ResNet Bottleneck (1x1, 3x3 with the stride, 1x1) whose convolutions draw from
    warehouses (the arguments of :class:`_KWResidualBlock`)."""

    expansion = 4

    def build_branch(self, manager: WarehouseManager, in_channels: int, planes: int,
                     warehouses: Sequence[Optional[str]], stride: int, norm_cfg: dict) -> None:
        out_channels = planes * self.expansion
        self.conv1 = kw_or_plain_conv(manager, in_channels, planes, 1, 1, warehouses[0])
        self.bn1 = build_norm_layer(norm_cfg, planes)[1]
        self.conv2 = kw_or_plain_conv(manager, planes, planes, 3, stride, warehouses[1])
        self.bn2 = build_norm_layer(norm_cfg, planes)[1]
        self.conv3 = kw_or_plain_conv(manager, planes, out_channels, 1, 1, warehouses[2])
        self.bn3 = build_norm_layer(norm_cfg, out_channels)[1]

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResNetSkeleton(BaseKWBackbone):
    """The ResNet every kw_mm ResNet shares: stem, four stages of blocks, outputs, freezing.

    Module names equal mmpretrain's / torchvision's ResNet (``conv1``, ``bn1``,
    ``layer1.0.conv2``, ``layer2.0.downsample.0`` ...). Subclasses set ``self.block``,
    ``self.stage_blocks``, ``self.drop_path_rate``, ``self.norm_cfg`` and ``self.with_cp``
    (gradient checkpointing of every residual block, passed to the blocks), call
    :meth:`build_network` and implement :meth:`make_stage`, which decides what kind of
    convolution each layer is.
    """

    arch_settings = {
        18: (KWBasicBlock, (2, 2, 2, 2)),
        34: (KWBasicBlock, (3, 4, 6, 3)),
        50: (KWBottleneck, (3, 4, 6, 3)),
        101: (KWBottleneck, (3, 4, 23, 3)),
        152: (KWBottleneck, (3, 8, 36, 3)),
    }

    def build_network(self, in_channels: int, stem_channels: int, base_channels: int) -> None:
        """The plain stem and the four stages (from :meth:`make_stage`), then their init."""
        self.conv1 = nn.Conv2d(in_channels, stem_channels, kernel_size=7, stride=2, padding=3,
                               bias=False)
        self.bn1 = build_norm_layer(self.norm_cfg, stem_channels)[1]
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.res_layers: List[str] = []
        in_channels = stem_channels
        layer_index = 0  # the reference's running block counter, part of the warehouse names
        for stage, num_blocks in enumerate(self.stage_blocks):
            planes = base_channels * 2**stage
            layer, layer_index = self.make_stage(stage, in_channels, planes, num_blocks,
                                                 layer_index)
            in_channels = planes * self.block.expansion
            name = f'layer{stage + 1}'
            self.add_module(name, layer)
            self.res_layers.append(name)
        self._init_plain_layers()

    def make_stage(self, stage: int, in_channels: int, planes: int, num_blocks: int,
                   layer_index: int) -> Tuple[nn.Sequential, int]:
        """Build stage ``stage``; returns it and the running block counter."""
        raise NotImplementedError

    def stage_modules(self, index: int) -> List[nn.Module]:
        """Stage ``index``: 0 is the stem (conv1, bn1), 1..4 are ``layer1``..``layer4``."""
        if not 0 <= index <= self.num_stages:
            raise IndexError(f'stage index must be in [0, {self.num_stages}], got {index}')
        if index == 0:
            return [self.conv1, self.bn1]
        return [getattr(self, self.res_layers[index - 1])]

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = {}
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            outs[i] = x
        return self.collect_outputs(outs)


@MODELS.register_module()
class KWResNet(ResNetSkeleton):
    """ResNet backbone built with KernelWarehouse convolutions.

    A re-implementation of the KW ResNets of the reference release with mmpretrain's interface:
    the same module names as ``mmpretrain.ResNet`` (style ``'pytorch'``), the same parameters,
    warehouse layout, cell assignment and initialization as the released models.

    Warehouses: one per stage. The first block of stage ``s + 1`` is handed over to stage ``s``:
    its ``conv1`` and its strided downsample draw from stage ``s``'s warehouse, the rest of the
    block from its own stage's. The stem stays a normal convolution; in Bottleneck ResNets
    ``layer1.0.conv1`` and ``layer1``'s stride-1 downsample do too.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        budget (float): The KW budget ``b`` (cells per warehouse / linear mixtures): 0.25, 0.5,
            1, 2 or 4. Defaults to 1.
        out_indices (Sequence[int]): Stages (0-3) whose outputs ``forward`` returns.
            Defaults to ``(3, )``.
        frozen_stages (int): Freeze the stem (0) and stages 1..k; -1 freezes nothing. The
            warehouses of frozen KW layers are frozen as well (see ``freeze_warehouses``).
            Defaults to -1.
        norm_eval (bool): Keep every BatchNorm, the attentions' included, in eval mode.
            Defaults to False.
        freeze_warehouses (bool): Freeze the cells of frozen stages' warehouses. With the
            handover, freezing stage ``k`` also freezes the cells used by ``conv1`` and the
            downsample of ``layer{k+1}.0`` (their attentions keep training). ``False``
            reproduces the reference detection code, where those cells keep training and the
            "frozen" stages change. Defaults to True.
        drop_path_rate (float): Stochastic depth rate, the same for every block (as the
            reference; not increasing with depth). The released 300-epoch models use 0.1
            except ResNet18 KW 1/2x and 1/4x (0). Defaults to 0.
        norm_cfg (dict): Norm layers of the network (not of the attentions).
            Defaults to ``dict(type='BN')``.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=...)``
            loads a checkpoint strictly. Defaults to None (weights are initialized at
            construction, as the reference).
        reduction (float): Hidden width ratio of the attentions. Defaults to 1/16.
        cell_inplane_ratio (float, optional): Cell input channels / gcd of the warehouse's input
            channels. Defaults to None: 1 for ``budget >= 1``, 0.5 below (as released).
        cell_outplane_ratio (float, optional): The same for output channels. Defaults to None.
        sharing_range (Sequence[str] | str): Which layers share a warehouse: one of the paper's
            ablation settings (Tables 6 and 7) ``'within-stage'`` (the paper's, the default),
            ``'within-layer'`` (one warehouse per layer), ``'none'`` (one warehouse per layer
            and every linear mixture only mixes its own cells) or ``'same-dim'`` (within each
            stage, per position in the block: the same-dimensioned kernels of its blocks, plus
            the handed-over layers at position 0, as the reference's ``'layer'``); or the name
            fields merged into one
            warehouse: the layers are named ``stage{s}_layer{l}_conv{c}`` as in the reference,
            so ``('layer', 'conv')`` (= ``'within-stage'``) gives one warehouse per stage. A
            reference-style string such as ``'layer_conv'`` is split at ``_``.
            Defaults to ``('layer', 'conv')``.
        nonlocal_basis_ratio (float, optional): Non-local basis of the attentions; below 1 the
            logits of other layers' cells come from a small shared basis. Defaults to None:
            1/16 for Bottleneck ResNets with ``budget < 1`` (the released ResNet50 KW 1/2x),
            else 1 (disabled).
        attention_norm (str): Norm of the attentions, ``'BN'`` or ``'LN'``. Defaults to
            ``'BN'``.
        attention_function (str): The attention function (paper Table 8): ``'caf'`` (the
            paper's), ``'softmax'``, ``'sigmoid'`` or ``'relu-l1'`` (``max(z, 0) / sum|z|``).
            Defaults to ``'caf'``.
        init_strategy (str): The attention initialization (paper Tables 9 and 13):
            ``'one-to-one'`` (the paper's), ``'all-to-one'``, ``'none'``, ``'many-to-one'``
            (``int(b)`` cells per mixture, b >= 2) or ``'one-to-many'`` (one cell to
            ``int(1/b)`` mixtures, b < 1). Defaults to ``'one-to-one'``.
        partition (bool): Kernel partition (paper Table 5). ``False`` makes every cell a
            whole kernel, shared only between kernels of one shape. Defaults to True.
        in_channels (int): Input channels. Defaults to 3.
        stem_channels (int): Output channels of the stem. Defaults to 64.
        base_channels (int): Middle channels of the first stage, doubled at every stage (as
            mmpretrain's ResNet; the paper's models use 64). Defaults to 64.
        with_cp (bool): Gradient checkpointing of every residual block (as mmpretrain's
            ResNet): activations inside a block are recomputed in the backward pass, for less
            memory at the cost of a second forward of the blocks. Defaults to False.

    Example:
        >>> import torch
        >>> from kw_mm.models import KWResNet
        >>> model = KWResNet(depth=18, budget=1, out_indices=(0, 1, 2, 3)).eval()
        >>> for out in model(torch.rand(1, 3, 64, 64)):
        ...     print(tuple(out.shape))
        (1, 64, 16, 16)
        (1, 128, 8, 8)
        (1, 256, 4, 4)
        (1, 512, 2, 2)
    """

    #: The budgets of the paper's ResNets.
    budgets = (0.25, 0.5, 1, 2, 4)

    def __init__(self,
                 depth: int,
                 budget: float = 1.0,
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 freeze_warehouses: bool = True,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None,
                 reduction: float = 1 / 16,
                 cell_inplane_ratio: Optional[float] = None,
                 cell_outplane_ratio: Optional[float] = None,
                 sharing_range: Union[Sequence[str], str] = ('layer', 'conv'),
                 nonlocal_basis_ratio: Optional[float] = None,
                 attention_norm: str = 'BN',
                 attention_function: str = 'caf',
                 init_strategy: str = 'one-to-one',
                 partition: bool = True,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 with_cp: bool = False) -> None:
        check_choice('depth', depth, self.arch_settings)
        check_choice('budget', budget, self.budgets)
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        super().__init__(out_indices, frozen_stages, norm_eval, freeze_warehouses, init_cfg)
        self.depth = depth
        self.budget = float(budget)
        self.block, self.stage_blocks = self.arch_settings[depth]
        self.drop_path_rate = drop_path_rate
        self.norm_cfg = dict(norm_cfg)
        self.with_cp = bool(with_cp)

        cell_ratio = 1.0 if budget >= 1 else 0.5
        if nonlocal_basis_ratio is None:
            use_basis = self.block is KWBottleneck and budget < 1
            nonlocal_basis_ratio = 1 / 16 if use_basis else 1.0
        sharing = self.resolve_sharing_range(sharing_range)
        # Registered first, as in the reference, so the state dict starts with the cells.
        self.warehouse_manager = WarehouseManager(
            reduction=reduction,
            cell_num_ratio=self.budget,
            cell_inplane_ratio=cell_ratio if cell_inplane_ratio is None else cell_inplane_ratio,
            cell_outplane_ratio=cell_ratio if cell_outplane_ratio is None else cell_outplane_ratio,
            nonlocal_basis_ratio=nonlocal_basis_ratio,
            norm=attention_norm,
            attention_function=attention_function,
            init_strategy=init_strategy,
            partition=partition,
            **sharing)

        self.build_network(in_channels, stem_channels, base_channels)
        self.build_warehouses()

    #: The warehouse sharing ranges of the paper's ablations (Tables 6 and 7), as arguments of
    #: :class:`WarehouseManager`.
    sharing_presets = {
        'within-stage': dict(sharing_range=('layer', 'conv')),
        'within-layer': dict(sharing_range=()),
        'none': dict(sharing_range=(), share_cells=False),
        # per stage and per position in the block (the reference's sharing_range='layer'):
        # the k x k x c x f of a position is the same in every block of a stage
        'same-dim': dict(sharing_range=('layer', )),
    }

    # ------------------------------------------------------------------ construction
    @classmethod
    def resolve_sharing_range(cls, sharing_range: Union[Sequence[str], str]) -> dict:
        """The manager's sharing arguments for a preset name or name fields."""
        if isinstance(sharing_range, str):
            if sharing_range in cls.sharing_presets:
                return dict(cls.sharing_presets[sharing_range])
        fields = parse_sharing_range(sharing_range)
        if not set(fields) <= {'stage', 'layer', 'conv'}:
            raise ValueError(f'sharing_range must be one of {list(cls.sharing_presets)} or name '
                             f"fields from ['stage', 'layer', 'conv'], got {sharing_range!r}")
        return dict(sharing_range=fields)

    @staticmethod
    def _warehouse(stage: int, layer: int, conv: int) -> Optional[str]:
        """The reference's layer name; stage -1 (before the first stage) means a normal conv."""
        return f'stage{stage}_layer{layer}_conv{conv}' if stage >= 0 else None

    def make_stage(self, stage: int, in_channels: int, planes: int, num_blocks: int,
                   layer_index: int) -> Tuple[nn.Sequential, int]:
        """Build one stage; returns it and the running block counter.

        Layers are reserved in the reference's order (the downsample before the first block)
        so that warehouses are numbered as in the released checkpoints.
        """
        block = self.block
        stride = 1 if stage == 0 else 2
        out_channels = planes * block.expansion
        mgr = self.warehouse_manager
        downsample = None
        if stride != 1 or in_channels != out_channels:
            # Handed over to the previous stage; layer1's stride-1 projection stays normal.
            warehouse = self._warehouse(stage - 1, layer_index + 1, 0) if stride != 1 else None
            downsample = nn.Sequential(
                kw_or_plain_conv(mgr, in_channels, out_channels, 1, stride, warehouse),
                build_norm_layer(self.norm_cfg, out_channels)[1])

        blocks = []
        for i in range(num_blocks):
            first = i == 0
            if first:
                # conv1 of the first block goes to the previous stage's warehouse. Stage 0 has
                # none: BasicBlocks keep stage 0, Bottlenecks keep a normal 1x1 convolution.
                conv1_stage = stage - 1
                if block is KWBasicBlock:
                    conv1_stage = max(conv1_stage, 0)
                names = [self._warehouse(conv1_stage, layer_index, 0)]
                names += [self._warehouse(stage, 0, c) for c in range(1, 3)]
            else:
                names = [self._warehouse(stage, layer_index, c) for c in range(3)]
            blocks.append(
                block(mgr, in_channels if first else out_channels, planes, names,
                      stride=stride if first else 1,
                      downsample=downsample if first else None,
                      drop_path_rate=self.drop_path_rate,
                      norm_cfg=self.norm_cfg,
                      with_cp=self.with_cp))
            layer_index = 1 if first else layer_index + 1
        return nn.Sequential(*blocks), layer_index

    def variant_name(self) -> str:
        return f'KWResNet(depth={self.depth}, budget={self.budget:g})'
