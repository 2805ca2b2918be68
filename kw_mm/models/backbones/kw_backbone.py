"""KW for any backbone of the OpenMMLab zoos: ``dict(type='kw_mm.KWBackbone', backbone=...)``.

The wrapped backbone is built by its own registry (``mmpretrain.ResNeXt``, ``mmdet.ResNet``
...), its layers are planned by the paper's design rules (:mod:`kw_mm.cnn.layout_rules`) and
the planned ones are replaced by KW layers. The result *is* the wrapped backbone (its class
gains :class:`KWBackbone` as a base): its forward, ``out_indices``, ``frozen_stages``,
``norm_eval``, ``with_cp`` and ``init_cfg`` are its own, its module names are unchanged, and its
warehouses are the submodule ``warehouse_manager``. So a wrapped ``mmpretrain.ResNet`` has the
state-dict keys of :class:`~kw_mm.models.KWResNet`, and their checkpoints load into each other.
"""
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn.bricks import Conv2dAdaptivePadding
from mmcv.cnn.bricks import wrappers as mmcv_wrappers
from mmengine.registry import DefaultScope

from kw_mm.cnn import KWAttention, KWConvNd
from kw_mm.cnn.layout_rules import (DEFAULT_SEPARATE, KWConv2dAdaptivePadding, LayerKind,
                                    LayoutPlan, LayoutRules, apply_plan, format_plan,
                                    plan_layout, register_layer_type)
from kw_mm.cnn.warehouse import PerWarehouse
from kw_mm.registry import MODELS
from .base import check_choice, load_strictly

# mmcv's layers that compute a plain convolution (its wrappers only add empty-input handling)
# or pad as TensorFlow's 'SAME' (mmpretrain's EfficientNet).
register_layer_type(mmcv_wrappers.Conv2d, LayerKind('conv2d'))
register_layer_type(mmcv_wrappers.Conv3d, LayerKind('conv3d'))
register_layer_type(mmcv_wrappers.Linear, LayerKind('linear'))
register_layer_type(Conv2dAdaptivePadding,
                    LayerKind('conv2d', KWConv2dAdaptivePadding, zero_padding=True))

#: The KW class made for each wrapped backbone class (one per class, so copies share it).
_KW_CLASSES: Dict[type, type] = {}


def _kw_class(base: type) -> type:
    if base not in _KW_CLASSES:
        _KW_CLASSES[base] = type(f'KW{base.__name__}', (KWBackbone, base),
                                 dict(__module__=__name__, __doc__=KWBackbone.__doc__))
    return _KW_CLASSES[base]


def _rebuild(base: type) -> nn.Module:
    """Unpickling: an empty instance of the KW class of ``base`` (its state follows)."""
    return object.__new__(_kw_class(base))


def build_wrapped(cfg: Union[dict, nn.Module]) -> nn.Module:
    """The backbone to wrap, from its config (a type without a scope takes the current
    default scope, e.g. ``'ResNet'`` in an mmdet config means ``'mmdet.ResNet'``)."""
    if isinstance(cfg, nn.Module):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'backbone must be a config dict with a type (or a module), got '
                        f'{cfg!r}')
    cfg = dict(cfg)
    kind = cfg['type']
    if isinstance(kind, str) and kind.split('.')[-1] == 'KWBackbone':
        raise ValueError('backbone of a KWBackbone cannot be a KWBackbone')
    if isinstance(kind, str) and '.' not in kind:
        scope = DefaultScope.get_current_instance()
        if scope is not None and scope.scope_name != 'kw_mm':
            cfg['type'] = f'{scope.scope_name}.{kind}'
    return MODELS.build(cfg)


@MODELS.register_module()
class KWBackbone(nn.Module):
    """Any backbone with its convolutions replaced by KernelWarehouse layers, planned by the
    paper's rules.

    ``KWBackbone(backbone=dict(type='mmpretrain.ResNeXt', depth=50), budget=1)`` builds the
    ResNeXt, plans its warehouses (:mod:`kw_mm.cnn.layout_rules`: layers staged by resolution,
    the first layer(s) of every resolution-changing block reassigned to the previous stage,
    greatest-common-divisor cells, n = b x m, one SE-style attention per layer) from its module
    tree and one forward pass of a ``trace_size`` input, and returns the ResNeXt itself with
    KW layers in place of the planned ones: an instance of a class derived from both (so
    ``isinstance(model, ResNeXt)`` holds). The plan is ``model.kw_plan``;
    ``tools/analysis/kw_layout.py`` prints it.

    Args:
        backbone (dict): Config of the backbone to wrap (any registry scope).
        budget (float): The budget b: a whole number >= 1 or 1/k. Defaults to 1.
        rules (str): The design rules; ``'paper'`` only. Defaults to ``'paper'``.
        static_depth (int): Layers within this many convolutions of the input stay static:
            1 (the stem; ResNet18), 2 (ResNet50: the stem and the first block's 1x1 and
            shortcut) or 0 (every layer; MobileNetV2, ConvNeXt). Defaults to 1.
        handover (int): Layers of a block that changes the resolution or width within this
            many convolutions of its input join the previous stage's warehouses (Table 15; 3:
            the whole first block of a MobileNetV2 channel group); 0: none. Defaults to 1.
        separate (str | Sequence[str]): Kinds with their own warehouses in each stage: ``'dw'``
            (depth-wise), ``'group'`` (grouped), ``'pw'`` (point-wise), ``'linear'`` (always).
            Defaults to ``('dw', 'group', 'linear')``.
        static_layers (str | Sequence[str]): Module names (fnmatch patterns) to keep static.
            Defaults to ().
        static_pooled (bool): Keep layers on pooled 1x1 maps (SE branches) static.
            Defaults to True.
        linears (bool): Replace ``nn.Linear`` layers on tokens / channels-last maps (ConvNeXt's
            point-wise layers, a ViT's linears). Defaults to True.
        unsupported (str): ``'error'`` (default) or ``'static'``: a convolution the rules cannot
            replace (a transposed convolution, a subclass with its own forward, non-zero
            padding) raises, or stays static if allowed.
        cell_ratio (float, optional): Cell channels / gcd on both sides (whole channels, a
            side of one channel uncut); None: 1 for b >= 1, 1/2 below. Defaults to None.
        stage_by_width (bool): A change of block width starts a stage as a change of
            resolution does (MobileNetV2's channel groups). Defaults to True.
        stage_blocks (int, optional): Split stages of more blocks into groups of consecutive
            blocks with warehouses of their own (3: the paper's ConvNeXt-Tiny). Defaults to
            None.
        reduction (float | dict, optional): Attention hidden ratio (per warehouse by name or
            kind). None: 1/16.
        cell_num_ratio, cell_inplane_ratio, cell_outplane_ratio (float | dict, optional):
            Per-warehouse overrides of the planned values (as :class:`WarehouseManager`).
        nonlocal_basis_ratio (float): Below 1, attentions of b < 1 warehouses use the release's
            non-local basis (its ResNet50 KW 1/2x uses 1/16). Defaults to 1 (off).
        attention_norm (str): ``'BN'`` or ``'LN'`` (the release's ConvNeXt). Defaults to
            ``'BN'``.
        attention_function (str): ``'caf'`` (the paper's) or an ablation. Defaults to ``'caf'``.
        init_strategy (str): Attention initialization. Defaults to ``'one-to-one'``.
        freeze_warehouses (bool): Layers frozen by the backbone's ``frozen_stages`` also freeze
            the warehouses they draw from. Defaults to True.
        trace_size (int): Side of the square input of the trace forward. Defaults to 64.
        in_channels (int): Channels of the trace input. Defaults to 3.
    """

    def __new__(cls, backbone=None, *args, **kwargs):
        if cls is not KWBackbone:  # a copy of a built one: an empty instance
            return super().__new__(cls)
        wrapped = build_wrapped(backbone)
        wrapped.__class__ = _kw_class(type(wrapped))
        return wrapped

    def __init__(self,
                 backbone: Union[dict, nn.Module],
                 budget: float = 1.0,
                 rules: str = 'paper',
                 static_depth: int = 1,
                 handover: int = 1,
                 separate: Union[str, Sequence[str]] = DEFAULT_SEPARATE,
                 static_layers: Union[str, Sequence[str]] = (),
                 static_pooled: bool = True,
                 linears: bool = True,
                 unsupported: str = 'error',
                 cell_ratio: Optional[float] = None,
                 stage_by_width: bool = True,
                 stage_blocks: Optional[int] = None,
                 reduction: Optional[PerWarehouse] = None,
                 cell_num_ratio: Optional[PerWarehouse] = None,
                 cell_inplane_ratio: Optional[PerWarehouse] = None,
                 cell_outplane_ratio: Optional[PerWarehouse] = None,
                 nonlocal_basis_ratio: float = 1.0,
                 attention_norm: str = 'BN',
                 attention_function: str = 'caf',
                 init_strategy: str = 'one-to-one',
                 freeze_warehouses: bool = True,
                 trace_size: int = 64,
                 in_channels: int = 3) -> None:
        # ``self`` is the wrapped backbone, built and initialized by __new__.
        check_choice('rules', rules, ('paper', ))
        layout_rules = LayoutRules(budget=budget, static_depth=static_depth, handover=handover,
                                   separate=separate, static_layers=static_layers,
                                   static_pooled=static_pooled, linears=linears,
                                   unsupported=unsupported, cell_ratio=cell_ratio,
                                   stage_by_width=stage_by_width, stage_blocks=stage_blocks)
        param = next(self.parameters(), None)
        inputs = torch.zeros(1, in_channels, trace_size, trace_size,
                             device=param.device if param is not None else None)
        try:
            plan = plan_layout(self, layout_rules, inputs)
        except ValueError as err:
            raise ValueError(f'KWBackbone({self._wrapped_name()}): {err}') from None
        self.kw_plan: LayoutPlan = plan
        self.kw_budget = float(budget)
        self.kw_freeze_warehouses = freeze_warehouses
        try:
            apply_plan(self, plan, dict(reduction=reduction, cell_num_ratio=cell_num_ratio,
                                        cell_inplane_ratio=cell_inplane_ratio,
                                        cell_outplane_ratio=cell_outplane_ratio,
                                        nonlocal_basis_ratio=nonlocal_basis_ratio,
                                        norm=attention_norm,
                                        attention_function=attention_function,
                                        init_strategy=init_strategy))
        except ValueError as err:  # a per-warehouse option naming no warehouse, a bad value
            raise ValueError(f'KWBackbone({self._wrapped_name()}): {err}') from None
        if param is not None:
            self.to(param.device)
        # the backbone's own freezing (frozen_stages, norm_eval) now covers the KW layers
        self.train(self.training)

    # ------------------------------------------------------------------ identity
    def _wrapped_name(self) -> str:
        return self._wrapped_class().__name__

    def _wrapped_class(self) -> type:
        mro = type(self).__mro__
        return mro[mro.index(KWBackbone) + 1]

    def __reduce_ex__(self, protocol):
        # the KW class is made at run time: rebuild it from the wrapped class when unpickling
        return _rebuild, (self._wrapped_class(), ), self.__dict__.copy()

    def variant_name(self) -> str:
        """E.g. ``KWBackbone(ResNet, budget=1)``, for messages."""
        return f'KWBackbone({self._wrapped_name()}, budget={self.kw_budget:g})'

    def warehouse_summary(self) -> list:
        """m, n and the cell shape of every warehouse, in order."""
        return self.warehouse_manager.summary()

    def format_plan(self) -> str:
        """The plan: every warehouse with its layers, cell shape, m, n and parameters, and every
        static layer with the reason."""
        return format_plan(self.kw_plan, self.warehouse_manager, self)

    # ------------------------------------------------------------------ training state
    def train(self, mode: bool = True) -> nn.Module:
        super().train(mode)
        if getattr(self, 'kw_freeze_warehouses', False) and 'warehouse_manager' in \
                self._modules:
            self._freeze_warehouses()
        return self

    def _freeze_warehouses(self) -> None:
        """Freeze the warehouses of KW layers the backbone froze (every attention parameter
        without gradient), so frozen stages cannot change through their cells."""
        frozen = set()
        for m in self.modules():
            if isinstance(m, KWConvNd) and m.owner is self.warehouse_manager:
                params = list(m.parameters())
                if params and not any(p.requires_grad for p in params):
                    frozen.add(m.warehouse_name)
        if frozen:
            self.warehouse_manager.freeze(sorted(frozen))

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """The wrapped backbone's initialization, except that a ``Pretrained`` init_cfg loads
        strictly (a KW checkpoint of another layout would half-load silently) and that the KW
        attentions get their reference initialization back after init rules that cover every
        ``Linear`` (ConvNeXt's, ViT's)."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            load_strictly(self, cfg['checkpoint'], cfg.get('prefix'), self.variant_name())
            self._is_init = True
            return
        first_call = not getattr(self, '_is_init', False)
        super().init_weights()
        if first_call:
            for m in self.modules():
                if isinstance(m, KWAttention):
                    m.reset_parameters()
