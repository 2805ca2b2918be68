"""DeiT (Vision Transformer) with KernelWarehouse linear layers (KW DeiT, paper Table 11).

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024, paragraph
"Applying KW to Vision Transformer Backbones"; the backbone is mmpretrain's ``VisionTransformer``
for the DeiT archs (Touvron et al., "Training data-efficient image transformers", ICML 2021).

The value projection and the output projection of every multi-head self-attention (MHSA) block
and both layers of every MLP block are :class:`~kw_mm.cnn.KWLinear` layers (tokens
``[B, L, C]``, their attention pooled over the tokens); query and key stay one static
``Linear(C, 2C)``. Everything else (patch embedding, class token, position embedding, norms) is
mmpretrain's, with its module names (``patch_embed.projection``, ``layers.{i}.ln1``,
``layers.{i}.attn.proj``, ``layers.{i}.ffn.layers.0.0``, ``layers.{i}.ffn.layers.1``, ``ln1``
...), except that mmpretrain's fused ``attn.qkv`` is split into ``attn.qk`` and ``attn.v``.

The paper prints no warehouse layout for DeiT. ``layout='kind'`` (the default) is the one that
gives the paper's DeiT-Tiny KW 1x (6.39M) and DeiT-Small KW 1x (24.36M) exactly with the
paper's rules (greatest-common-divisor cells, ``n = b * m``, the reference attention):

- one warehouse ``attn`` for the value and output projections of all 12 MHSA blocks
  (``C x C`` cells, M = 1 per layer, m = 24);
- one warehouse ``mlp{g}`` per 4 consecutive MLP blocks for both of their layers (``C x C``
  cells, M = 4 per layer, m = 32);
- KW 3/4x applies KW 1/2x (half-gcd cells, b = 1/2) to the MLP warehouses and KW 1x to
  ``attn``, as KW 3/4x ConvNeXt does to its point-wise warehouses.

``layout='joint'`` is the alternative of the layout analysis (one warehouse per 3 consecutive
blocks holding both their MHSA and MLP layers; 3/4x halves the last two). No layout of the
reference design gives all four of the paper's KW DeiT counts: see ``docs/model_zoo.md`` (KW
DeiT) and ``docs/design.md``.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.utils import build_norm_layer, resize_pos_embed

from kw_mm.cnn import WarehouseManager
from kw_mm.registry import MODELS
from .base import BaseKWBackbone, check_choice


class KWMultiheadAttention(nn.Module):
    """Multi-head self-attention with static query/key and KW value and output projections.

    Args:
        manager (WarehouseManager): Creates the KW layers.
        embed_dims (int): Token channels ``C``.
        num_heads (int): Attention heads.
        warehouses (tuple[str, str]): Warehouses of the value and the output projection.
        qkv_bias (bool): Biases of the query, key and value projections. Defaults to True.
        attn_drop (float): Dropout of the attention weights. Defaults to 0.
        proj_drop (float): Dropout after the output projection. Defaults to 0.
        drop_path_rate (float): Stochastic depth of the block. Defaults to 0.
    """

    def __init__(self,
                 manager: WarehouseManager,
                 embed_dims: int,
                 num_heads: int,
                 warehouses: Tuple[str, str],
                 qkv_bias: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 drop_path_rate: float = 0.) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads})')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.qk = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.v = manager.reserve(embed_dims, embed_dims, bias=qkv_bias,
                                 warehouse_name=warehouses[0], layer_type='linear')
        self.attn_drop = attn_drop
        self.proj = manager.reserve(embed_dims, embed_dims, bias=True,
                                    warehouse_name=warehouses[1], layer_type='linear')
        self.proj_drop = nn.Dropout(proj_drop)
        self.out_drop = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        head_dims = self.embed_dims // self.num_heads
        qk = self.qk(x).reshape(batch, tokens, 2, self.num_heads, head_dims).permute(2, 0, 3, 1, 4)
        v = self.v(x).reshape(batch, tokens, self.num_heads, head_dims).transpose(1, 2)
        dropout = self.attn_drop if self.training else 0.
        out = F.scaled_dot_product_attention(qk[0], qk[1], v, dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, tokens, self.embed_dims)
        return self.out_drop(self.proj_drop(self.proj(out)))


class KWFFN(nn.Module):
    """The MLP block with two KW linear layers (mmcv ``FFN`` names: ``layers.0.0``,
    ``layers.1``), GELU between them.

    Args:
        manager (WarehouseManager): Creates the KW layers.
        embed_dims (int): Token channels.
        feedforward_channels (int): Hidden channels.
        warehouse (str): Warehouse of both layers.
        ffn_drop (float): Dropout after each layer. Defaults to 0.
        drop_path_rate (float): Stochastic depth of the block. Defaults to 0.
    """

    def __init__(self,
                 manager: WarehouseManager,
                 embed_dims: int,
                 feedforward_channels: int,
                 warehouse: str,
                 ffn_drop: float = 0.,
                 drop_path_rate: float = 0.) -> None:
        super().__init__()
        fc1 = manager.reserve(embed_dims, feedforward_channels, bias=True,
                              warehouse_name=warehouse, layer_type='linear')
        fc2 = manager.reserve(feedforward_channels, embed_dims, bias=True,
                              warehouse_name=warehouse, layer_type='linear')
        self.layers = nn.Sequential(
            nn.Sequential(fc1, nn.GELU(), nn.Dropout(ffn_drop)), fc2, nn.Dropout(ffn_drop))
        self.dropout_layer = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return identity + self.dropout_layer(self.layers(x))


class KWTransformerEncoderLayer(nn.Module):
    """A pre-norm encoder layer: ``x + attn(ln1(x))``, then ``x + ffn(ln2(x))``."""

    def __init__(self,
                 manager: WarehouseManager,
                 embed_dims: int,
                 num_heads: int,
                 feedforward_channels: int,
                 attn_warehouses: Tuple[str, str],
                 ffn_warehouse: str,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6)) -> None:
        super().__init__()
        self.ln1 = build_norm_layer(norm_cfg, embed_dims)
        self.attn = KWMultiheadAttention(manager, embed_dims, num_heads, attn_warehouses,
                                         qkv_bias=qkv_bias, attn_drop=attn_drop_rate,
                                         proj_drop=drop_rate, drop_path_rate=drop_path_rate)
        self.ln2 = build_norm_layer(norm_cfg, embed_dims)
        self.ffn = KWFFN(manager, embed_dims, feedforward_channels, ffn_warehouse,
                         ffn_drop=drop_rate, drop_path_rate=drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return self.ffn(self.ln2(x), identity=x)


@MODELS.register_module()
class KWVisionTransformer(BaseKWBackbone):
    """DeiT with KernelWarehouse value, output-projection and MLP layers (paper Table 11).

    A stage is an encoder layer: stage 0 is the patch embedding (with the class token and the
    position embedding), stages 1-12 the encoder layers, for ``frozen_stages``; ``out_indices``
    count encoder layers (0-11, -1 the last), as mmpretrain's ``VisionTransformer``.

    Args:
        arch (str): ``'deit-tiny'`` or ``'deit-small'``. Defaults to ``'deit-tiny'``.
        budget (float): The KW budget: 0.75, 1 or 4. Defaults to 1.
        layout (str): The warehouse layout, ``'kind'`` (the default; one warehouse for the
            value and output projections of all blocks, one per 4 blocks for the MLP layers)
            or ``'joint'`` (one warehouse per 3 blocks for all four layers). See the module
            docstring.
        img_size (int): Input size the position embedding is made for; other sizes are
            resized to (bicubic). Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        out_indices (int | Sequence[int]): Encoder layers whose class token (after the final
            norm for the last one) ``forward`` returns. Defaults to -1.
        drop_rate (float): Dropout after the position embedding and in the blocks.
            Defaults to 0.
        attn_drop_rate (float): Dropout of the attention weights. Defaults to 0.
        drop_path_rate (float): Stochastic depth, rising linearly to this value over the
            blocks (mmpretrain's rule). Defaults to 0.
        qkv_bias (bool): Biases of the query, key and value projections. Defaults to True.
        norm_cfg (dict): Norm layers of the network. Defaults to
            ``dict(type='LN', eps=1e-6)``.
        frozen_stages (int): Freeze the patch embedding (0) and encoder layers 1..k; -1
            freezes nothing. Defaults to -1.
        freeze_warehouses (bool): Frozen layers also freeze the warehouses they draw from.
            Defaults to True.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=...)``
            loads a checkpoint strictly. Defaults to None.
        reduction (float): Hidden ratio of the KW attentions. Defaults to 1/16.
        attention_norm (str): Norm of the KW attentions, ``'BN'`` or ``'LN'``.
            Defaults to ``'BN'``.
        attention_function (str): ``'caf'`` (the paper's), ``'softmax'``, ``'sigmoid'`` or
            ``'relu-l1'``. Defaults to ``'caf'``.
        init_strategy (str): The attention initialization, ``'one-to-one'`` (the paper's),
            ``'all-to-one'``, ``'none'``, ``'many-to-one'`` or ``'one-to-many'``.
            Defaults to ``'one-to-one'``.

    Example:
        >>> import torch
        >>> from kw_mm.models import KWVisionTransformer
        >>> model = KWVisionTransformer(arch='deit-tiny', budget=1, img_size=32).eval()
        >>> tuple(model(torch.rand(2, 3, 32, 32))[0].shape)
        (2, 192)
    """

    arch_settings = {
        'deit-tiny': dict(embed_dims=192, num_layers=12, num_heads=3, feedforward_channels=768),
        'deit-small': dict(embed_dims=384, num_layers=12, num_heads=6,
                           feedforward_channels=1536),
    }
    #: Blocks per warehouse of the two kinds of each layout; 3/4x halves the warehouses listed.
    layout_settings = {
        'kind': dict(attn_blocks=12, mlp_blocks=4, joint=False),
        'joint': dict(attn_blocks=3, mlp_blocks=3, joint=True),
    }
    budgets = (0.75, 1, 4)
    num_stages = 12
    num_extra_tokens = 1  # the class token
    restore_attention_init = True

    def __init__(self,
                 arch: str = 'deit-tiny',
                 budget: float = 1.0,
                 layout: str = 'kind',
                 img_size: int = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 frozen_stages: int = -1,
                 freeze_warehouses: bool = True,
                 init_cfg: Optional[dict] = None,
                 reduction: float = 1 / 16,
                 attention_norm: str = 'BN',
                 attention_function: str = 'caf',
                 init_strategy: str = 'one-to-one') -> None:
        check_choice('arch', arch, self.arch_settings)
        check_choice('budget', budget, self.budgets)
        check_choice('layout', layout, self.layout_settings)
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        super().__init__(out_indices, frozen_stages, False, freeze_warehouses, init_cfg)
        settings = self.arch_settings[arch]
        self.arch = arch
        self.budget = float(budget)
        self.layout = layout
        self.embed_dims = settings['embed_dims']
        self.num_layers = settings['num_layers']

        names = self._warehouse_names(self.layout_settings[layout], self.num_layers)
        # Registered first, so the state dict starts with the cells (as the KW ConvNets).
        self.warehouse_manager = WarehouseManager(
            reduction=reduction,
            cell_num_ratio=self._budgets(names),
            cell_inplane_ratio=self._cell_ratios(names),
            cell_outplane_ratio=self._cell_ratios(names),
            norm=attention_norm,
            attention_function=attention_function,
            init_strategy=init_strategy)

        self.patch_embed = PatchEmbed(in_channels=in_channels, input_size=img_size,
                                      embed_dims=self.embed_dims, conv_type='Conv2d',
                                      kernel_size=patch_size, stride=patch_size, bias=True)
        self.patch_resolution = self.patch_embed.init_out_size
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + self.num_extra_tokens, self.embed_dims))
        self.drop_after_pos = nn.Dropout(p=drop_rate)

        dpr = [drop_path_rate * i / max(self.num_layers - 1, 1) for i in range(self.num_layers)]
        self.layers = nn.ModuleList(
            KWTransformerEncoderLayer(
                self.warehouse_manager, self.embed_dims, settings['num_heads'],
                settings['feedforward_channels'], attn_warehouses=names['attn'][i],
                ffn_warehouse=names['ffn'][i], drop_rate=drop_rate,
                attn_drop_rate=attn_drop_rate, drop_path_rate=dpr[i], qkv_bias=qkv_bias,
                norm_cfg=norm_cfg) for i in range(self.num_layers))
        self.ln1 = build_norm_layer(norm_cfg, self.embed_dims)

        self._init_plain_layers()
        self.build_warehouses()

    # ------------------------------------------------------------------ layout
    @staticmethod
    def _warehouse_names(layout: dict, num_layers: int) -> Dict[str, list]:
        """Warehouse of every block's (value, output projection) and of its MLP; ``half``
        lists the warehouses KW 3/4x may halve, in block order."""
        if layout['joint']:
            groups = [f'group{i // layout["attn_blocks"]}' for i in range(num_layers)]
            return dict(attn=[(g, g) for g in groups], ffn=groups, half=groups)
        one_attn = layout['attn_blocks'] >= num_layers
        attn = ['attn' if one_attn else f'attn{i // layout["attn_blocks"]}'
                for i in range(num_layers)]
        ffn = [f'mlp{i // layout["mlp_blocks"]}' for i in range(num_layers)]
        return dict(attn=[(a, a) for a in attn], ffn=ffn, half=ffn)

    def _half_warehouses(self, names: Dict[str, list]) -> List[str]:
        """The warehouses KW 3/4x runs at KW 1/2x: the MLP warehouses (``'kind'``) or the
        last two of the four groups (``'joint'``), as the last two point-wise warehouses of KW
        3/4x ConvNeXt."""
        if self.budget != 0.75:
            return []
        unique = list(dict.fromkeys(names['half']))
        return unique[-2:] if self.layout_settings[self.layout]['joint'] else unique

    def _budgets(self, names: Dict[str, list]) -> Union[float, dict]:
        if self.budget != 0.75:
            return self.budget
        return dict(default=1.0, **{name: 0.5 for name in self._half_warehouses(names)})

    def _cell_ratios(self, names: Dict[str, list]) -> dict:
        return dict(default=1.0, **{name: 0.5 for name in self._half_warehouses(names)})

    def _init_plain_layers(self) -> None:
        """DeiT's init of the static layers: truncated normal (std 0.02) for the position
        embedding, class token and query/key projections, zero biases, unit norms. The KW
        layers get theirs from the warehouse manager."""
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for layer in self.layers:
            trunc_normal_(layer.attn.qk.weight, std=0.02)
            if layer.attn.qk.bias is not None:
                nn.init.zeros_(layer.attn.qk.bias)

    # ------------------------------------------------------------------ BaseKWBackbone
    def stage_modules(self, index: int) -> List[nn.Module]:
        """Stage ``index``: 0 is the patch embedding, 1..12 the encoder layers; the final norm
        goes with the last layer."""
        if not 0 <= index <= self.num_stages:
            raise IndexError(f'stage index must be in [0, {self.num_stages}], got {index}')
        if index == 0:
            return [self.patch_embed, self.drop_after_pos]
        modules = [self.layers[index - 1]]
        return modules + [self.ln1] if index == self.num_stages else modules

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if self.frozen_stages >= 0:
            self.cls_token.requires_grad = False
            self.pos_embed.requires_grad = False

    def variant_name(self) -> str:
        return (f'KWVisionTransformer(arch={self.arch!r}, budget={self.budget:g}, '
                f'layout={self.layout!r})')

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        batch = x.shape[0]
        x, patch_resolution = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution, patch_resolution,
                                 mode='bicubic', num_extra_tokens=self.num_extra_tokens)
        x = self.drop_after_pos(x)
        outs = {}
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i == self.num_layers - 1:
                x = self.ln1(x)
            if i in self.out_indices:
                outs[i] = x[:, 0]
        return self.collect_outputs(outs)
