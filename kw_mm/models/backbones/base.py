"""What every KW backbone shares: warehouses, the init of plain layers, freezing, norm_eval and
strict pretrained loading."""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from kw_mm.cnn import KWAttention, KWConvNd
from kw_mm.utils.checkpoint import (CheckpointMismatchError, WarehouseInfo, compare_state_dict,
                                    load_file, mismatch_message, select_prefix,
                                    state_dict_shapes, unwrap_state_dict)


def check_choice(name: str, value, choices) -> None:
    """Raise a ValueError naming ``value`` and the allowed ``choices``."""
    if value not in choices:
        try:
            allowed = sorted(choices)  # numbers in numeric order: [18, 34, 50, 101, 152]
        except TypeError:
            allowed = sorted(choices, key=str)
        raise ValueError(f'{name} must be one of {allowed}, got {value!r}')


class BaseKWBackbone(BaseModule):
    """Base of the KW backbones.

    Subclasses build their layers through ``self.warehouse_manager.reserve(...)``, call
    :meth:`build_warehouses` at the end of ``__init__`` and implement :meth:`stage_modules`.

    Args:
        out_indices (Sequence[int]): Stages whose outputs ``forward`` returns.
        frozen_stages (int): Stages up to this index (and the stem for >= 0) are frozen; -1
            freezes nothing.
        norm_eval (bool): Keep every BatchNorm (attention BNs included) in eval mode.
        freeze_warehouses (bool): Frozen stages also freeze the warehouses their KW layers draw
            from, so their outputs cannot change. A warehouse shared with the next stage's first
            block (the ResNet handover) is then frozen for that block too; its attention keeps
            training. ``False`` reproduces the reference detection code, where the cells of
            frozen stages keep training.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=...)`` loads
            a checkpoint strictly (every tensor, same shapes) or raises naming both sides.
    """

    #: Number of stages; out_indices and frozen_stages are checked against it.
    num_stages: int = 4

    def __init__(self,
                 out_indices: Sequence[int],
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 freeze_warehouses: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        out_indices = tuple(i + self.num_stages if i < 0 else i for i in out_indices)
        for i in out_indices:
            if not 0 <= i < self.num_stages:
                raise ValueError(f'out_indices must be in [0, {self.num_stages}), got {i}')
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], got '
                             f'{frozen_stages}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.freeze_warehouses = freeze_warehouses

    # ------------------------------------------------------------------ construction
    def build_warehouses(self) -> None:
        """Create the warehouses and allocate every KW layer (end of ``__init__``)."""
        self.warehouse_manager.store()
        self.warehouse_manager.allocate(self)
        self._freeze_stages()

    @torch.no_grad()
    def _init_plain_layers(self) -> None:
        """Kaiming (fan_out) plain convolutions, unit / zero norms (as the reference and
        mmpretrain's ResNet and MobileNetV2).

        Runs before the warehouses are allocated: the attentions and cells have their own
        initialization (:class:`~kw_mm.cnn.WarehouseManager`).
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def warehouse_names(self) -> List[str]:
        """Names of the warehouses, in the order they are created (first reservation)."""
        names = OrderedDict()
        for m in self.modules():
            if isinstance(m, KWConvNd) and m.owner is self.warehouse_manager:
                names[m.warehouse_name] = None
        return list(names)

    def warehouse_summary(self) -> List[dict]:
        """m, n and the cell shape of every warehouse, in order."""
        return self.warehouse_manager.summary()

    # ------------------------------------------------------------------ freezing
    def frozen_modules(self) -> List[nn.Module]:
        """The modules frozen by ``frozen_stages`` (stem for >= 0, then stages 1..k)."""
        if self.frozen_stages < 0:
            return []
        return [m for i in range(self.frozen_stages + 1) for m in self.stage_modules(i)]

    def stage_modules(self, index: int) -> List[nn.Module]:
        """Modules of stage ``index``: 0 is the stem, 1..num_stages the stages."""
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        modules = self.frozen_modules()
        warehouses = set()
        for module in modules:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
            warehouses.update(layer.warehouse_name for layer in module.modules()
                              if isinstance(layer, KWConvNd))
        if self.freeze_warehouses and warehouses:
            self.warehouse_manager.freeze(sorted(warehouses))

    def train(self, mode: bool = True) -> 'BaseKWBackbone':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ outputs
    def collect_outputs(self, outputs: Dict[int, object]) -> Tuple:
        return tuple(outputs[i] for i in self.out_indices)

    # ------------------------------------------------------------------ pretrained
    def variant_name(self) -> str:
        """A short description such as ``KWResNet(depth=50, budget=1)`` for messages."""
        return type(self).__name__

    #: Re-initialize the KW attentions after mmengine's init rules ran (see init_weights).
    restore_attention_init: bool = False

    def init_weights(self) -> None:
        """Weights are initialized at construction; a ``Pretrained`` init_cfg loads strictly.

        mmengine's own ``Pretrained`` init loads with ``strict=False`` and only logs what it
        skipped; a KW checkpoint of another budget would then half-load silently.

        With :attr:`restore_attention_init`, the attentions get the reference initialization
        (Kaiming fan-out, zero bias) back after the other init rules ran: mmpretrain's
        ConvNeXt and ViT classifier configs apply ``TruncNormal`` to every ``Linear`` of the
        model, the attentions' included. Warehouse cells are raw parameters and untouched by
        such rules.
        """
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix'))
            self._is_init = True
            return
        first_call = not self._is_init
        super().init_weights()
        if first_call and self.restore_attention_init:
            for m in self.modules():
                if isinstance(m, KWAttention):
                    m.reset_parameters()

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None) -> None:
        """Load the backbone tensors of ``checkpoint`` (under ``prefix``, if given) strictly."""
        load_strictly(self, checkpoint, prefix, self.variant_name(), self.adapt_pretrained_state)

    def adapt_pretrained_state(self, state: Dict) -> Dict:
        """Tensors a backbone may legitimately lack or add before the strict comparison
        (e.g. ConvNeXt's per-output norms); by default none."""
        return state

    def _warehouse_info(self) -> Dict[str, WarehouseInfo]:
        """State-dict key -> name, m and b of every warehouse (for mismatch reports)."""
        return warehouse_info(self)


def warehouse_info(model: nn.Module) -> Dict[str, WarehouseInfo]:
    """State-dict key -> name, m and b of every warehouse of ``model``'s own
    ``warehouse_manager`` (none for rival backbones), for mismatch reports."""
    manager = getattr(model, 'warehouse_manager', None)
    return {f'warehouse_manager.weights.{i}': WarehouseInfo(spec.name, spec.num_mixtures,
                                                            spec.cell_num_ratio)
            for i, spec in enumerate(manager.specs if manager is not None else ())}


def load_strictly(model: nn.Module, checkpoint: str, prefix: Optional[str], target: str,
                  adapt: Optional[Callable[[Dict], Dict]] = None) -> None:
    """Load the tensors of ``checkpoint`` (under ``prefix``, if given) into ``model`` strictly:
    every tensor, same shapes, or a :class:`CheckpointMismatchError` naming both sides
    (``target`` names the model) and the warehouses involved.

    Args:
        adapt (callable, optional): Maps the selected state dict before the comparison
            (tensors a backbone may legitimately lack or add).
    """
    state, _ = unwrap_state_dict(load_file(checkpoint), source=checkpoint)
    state = select_prefix(state, prefix)
    if adapt is not None:
        state = adapt(state)
    mismatch = compare_state_dict(state, state_dict_shapes(model))
    if mismatch:
        source = f'checkpoint {checkpoint}' + (f' under prefix {prefix!r}' if prefix else '')
        raise CheckpointMismatchError(
            mismatch_message(mismatch, source, target, warehouse_info(model)))
    model.load_state_dict(state, strict=True)
