"""ResNets with the paper's rival dynamic convolutions: DY-Conv, ODConv and CondConv.

The ResNet skeleton, blocks and module names are those of :class:`KWResNet` (mmpretrain's
names); only the convolutions differ. Which layers are dynamic (docs/rivals.md, the rules that
reproduce the KW paper's parameter counts and the ODConv release):

- DY-Conv: every convolution except the stem, the 1x1 downsample convolutions included.
- ODConv: every convolution inside a residual block; stem and downsample convolutions static.
- CondConv: the convolutions of the last three residual blocks, with one router per block fed
  with the block input and shared by its convolutions (``layer3.1.router`` ...); the
  classifier is a CondConv linear layer too (:class:`~kw_mm.models.heads.CondLinearClsHead`).
"""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
from mmcv.cnn import build_norm_layer

from kw_mm.cnn.dynamic import CondConv2d, CondConvRouter
from kw_mm.registry import MODELS
from .base import check_choice
from .dynamic_base import DynamicConvFactory, resolve_method
from .kw_resnet import ResNetSkeleton


@MODELS.register_module()
class DynamicResNet(ResNetSkeleton):
    """ResNet backbone with DY-Conv, ODConv or CondConv layers.

    Args:
        depth (int): 18, 34, 50, 101 or 152.
        method (str): ``'dyconv'``, ``'odconv'`` or ``'condconv'``.
        num_kernels (int, optional): ``K``: 4 for DY-Conv, 1, 2 or 4 for ODConv, 8 (experts)
            for CondConv. None takes the KW paper's (4, 4, 8). Defaults to None.
        out_indices (Sequence[int]): Stages (0-3) whose outputs ``forward`` returns.
            Defaults to ``(3, )``.
        frozen_stages (int): Freeze the stem (0) and stages 1..k (their dynamic kernels and
            attentions too, as the ODConv release); -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep every BatchNorm, attention BNs included, in eval mode.
            Defaults to False.
        drop_path_rate (float): Stochastic depth, the same for every block. Defaults to 0.
        norm_cfg (dict): Norm layers. Defaults to ``dict(type='BN')``.
        reduction (float, optional): Attention hidden ratio; None takes the method's
            (DY-Conv 1/4, ODConv 1/16). Not for CondConv. Defaults to None.
        attention_function (str, optional): Kernel attention ``'softmax'`` (the methods') or
            ``'caf'`` (KW paper Table 10). Not for CondConv. Defaults to None (softmax).
        condconv_blocks (int): CondConv only: how many of the last residual blocks are
            CondConv blocks. Defaults to 3.
        in_channels (int): Input channels. Defaults to 3.
        stem_channels (int): Stem output channels. Defaults to 64.
        base_channels (int): Middle channels of the first stage. Defaults to 64.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=...)``
            loads strictly. Defaults to None (initialized at construction).
        with_cp (bool): Gradient checkpointing of every residual block (non-reentrant, as
            :class:`KWResNet`). Defaults to False.

    Example:
        >>> import torch
        >>> from kw_mm.models import DynamicResNet
        >>> model = DynamicResNet(depth=18, method='odconv').eval()
        >>> tuple(model(torch.rand(1, 3, 64, 64))[0].shape)
        (1, 512, 2, 2)
    """

    methods = ('dyconv', 'odconv', 'condconv')

    def __init__(self,
                 depth: int,
                 method: str,
                 num_kernels: Optional[int] = None,
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 reduction: Optional[float] = None,
                 attention_function: Optional[str] = None,
                 condconv_blocks: int = 3,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 init_cfg: Optional[dict] = None,
                 with_cp: bool = False) -> None:
        check_choice('depth', depth, self.arch_settings)
        spec, num_kernels = resolve_method(type(self).__name__, method, num_kernels,
                                           self.methods)
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        super().__init__(out_indices, frozen_stages, norm_eval, init_cfg=init_cfg)
        self.depth = depth
        self.method = method
        self.num_kernels = num_kernels
        self.block, self.stage_blocks = self.arch_settings[depth]
        if not 0 <= condconv_blocks <= sum(self.stage_blocks):
            raise ValueError(f'condconv_blocks must be in [0, {sum(self.stage_blocks)}], got '
                             f'{condconv_blocks!r}')
        self.drop_path_rate = drop_path_rate
        self.norm_cfg = dict(norm_cfg)
        self.with_cp = bool(with_cp)
        self.factory = DynamicConvFactory(spec, num_kernels, reduction=reduction,
                                          attention_function=attention_function)
        self._first_cond_block = sum(self.stage_blocks) - condconv_blocks
        self._blocks_built = 0
        self.build_network(in_channels, stem_channels, base_channels)
        self._freeze_stages()

    def _block_is_dynamic(self, index: int) -> bool:
        return self.method != 'condconv' or index >= self._first_cond_block

    def make_stage(self, stage: int, in_channels: int, planes: int, num_blocks: int,
                   layer_index: int) -> Tuple[nn.Sequential, int]:
        block = self.block
        stride = 1 if stage == 0 else 2
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                self.factory.reserve(in_channels, out_channels, 1, stride=stride, bias=False,
                                     enabled=self.method == 'dyconv'),
                build_norm_layer(self.norm_cfg, out_channels)[1])
        blocks = []
        for i in range(num_blocks):
            dynamic = self._block_is_dynamic(self._blocks_built)
            block_in = in_channels if i == 0 else out_channels
            blocks.append(
                block(self.factory, block_in, planes, ['dynamic' if dynamic else None] * 3,
                      stride=stride if i == 0 else 1,
                      downsample=downsample if i == 0 else None,
                      drop_path_rate=self.drop_path_rate,
                      norm_cfg=self.norm_cfg,
                      with_cp=self.with_cp))
            if dynamic and self.method == 'condconv':
                self._share_router(blocks[-1], block_in)
            self._blocks_built += 1
        return nn.Sequential(*blocks), layer_index

    def _share_router(self, block: nn.Module, in_channels: int) -> None:
        """One router per block, fed with the block input, for every CondConv of the block."""
        block.router = CondConvRouter(in_channels, self.num_kernels)
        for m in block.modules():
            if isinstance(m, CondConv2d):
                block.router.attach(m)
        # Routed when the block's first convolution receives the block input: inside the
        # block's forward, so a checkpointed block (with_cp) routes again when it recomputes.
        block.conv1.register_forward_pre_hook(block.router.route_hook)

    def variant_name(self) -> str:
        return (f'DynamicResNet(method={self.method!r}, depth={self.depth}, '
                f'num_kernels={self.num_kernels})')
