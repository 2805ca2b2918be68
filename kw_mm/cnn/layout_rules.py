"""The paper's warehouse design rules, applied to any network (torch only).

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024, Sec. 3 and
appendix A.3 ("Design details"). The hand-built KW backbones wire their warehouses per
architecture; :func:`plan_layout` derives the same kind of layout from the module tree, the
layer shapes and one short forward pass of a small input (the *trace*), and :func:`apply_plan`
replaces the planned layers by KW layers of a :class:`~kw_mm.cnn.warehouse.WarehouseManager`.

The rules (each open choice is an option of :class:`LayoutRules`, with the paper's default):

1. **Which layers.** Every convolution (and every ``nn.Linear`` that runs on tokens or
   channels-last maps; of a ViT's fused ``qkv`` only the value part, as KW DeiT) is a
   candidate. A layer stays static if it is among the first ``static_depth`` layers of the
   network (depth = layers on the longest path from the input, itself included: the paper keeps
   the first layer of ResNet18 and the first two of ResNet50 static, the parallel shortcut of
   the second included), if its input is a pooled 1x1 map (an SE-style attention branch,
   already input-dependent), or if the user names it.
2. **Stages.** A *block* is the innermost indexed element of a ``Sequential`` / ``ModuleList``
   that holds two or more candidates (``layer2.0`` of a ResNet). A stage is a (resolution,
   width) of block outputs in execution order: resolution stages for a ResNet, channel groups
   for a MobileNetV2 (the paper's stages). A layer outside blocks has its own output's stage,
   or, after the blocks (a final 1x1 convolution), the stage of the layer it reads.
3. **Reassignment (Table 15).** In a block that changes the resolution or the width, the
   layers within ``handover`` layers of the block's input (its first layer and the parallel
   shortcut with the default 1) move to the previous stage of blocks: their input channels are
   that stage's, so keeping them would shrink the common cell of the whole stage.
4. **Kinds.** Within a stage, depth-wise, grouped and linear layers get warehouses of their own
   (``separate``); point-wise and dense convolutions share one unless ``'pw'`` is separated
   too. ``stage_blocks`` splits long stages into groups of blocks (ConvNeXt-Tiny's third).
5. **Cells.** The cell of a warehouse has the greatest common divisors of its layers' output and
   input channels (per group), 1 in space; below b = 1, half of them (where a half is whole),
   and every layer must then be cut into a multiple of ``1 / b`` mixtures. n = max(int(b m), 1).

The trace runs the plain network once (eval mode, no gradients) with forward hooks on the
candidates and their blocks and a torch function mode that tags every tensor with its depth
and the layer that produced it.
"""
import fnmatch
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .functional import count_mixtures
from .kw_conv import KWConv2d, KWConvNd
from .warehouse import WarehouseManager

#: Layer kinds a warehouse can be reserved for.
KINDS = ('conv', 'pw', 'dw', 'group', 'linear')
#: Kinds that get warehouses of their own by default (the rest share ``'conv'``).
DEFAULT_SEPARATE = ('dw', 'group', 'linear')
#: Most mixtures a layer may be cut into: the paper's largest layer has 144 (ResNet18 1/4x),
#: a few thousand means cells far smaller than the layer (a bad sharing) and an attention of
#: (n + 1) x M logits that would not fit in memory.
MAX_MIXTURES = 2048
#: Layer types that are convolutions but have no KW counterpart, and why.
UNSUPPORTED_REASON = {
    nn.ConvTranspose1d: 'a transposed convolution has no KW counterpart',
    nn.ConvTranspose2d: 'a transposed convolution has no KW counterpart',
    nn.ConvTranspose3d: 'a transposed convolution has no KW counterpart',
}


class KWConv2dAdaptivePadding(KWConv2d):
    """A :class:`KWConv2d` that pads its input as TensorFlow's ``'SAME'`` (as mmcv's
    ``Conv2dAdaptivePadding``, used by mmpretrain's EfficientNet): the padding depends on the
    input size, asymmetric where the total is odd. ``padding`` is 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1],
                                 self.dilation[::-1]):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


@dataclass
class LayerKind:
    """How a plain layer type becomes a KW layer.

    Attributes:
        layer_type (str): ``'conv1d'``, ``'conv2d'``, ``'conv3d'`` or ``'linear'``
            (:meth:`WarehouseManager.reserve`).
        kw_class (type, optional): A :class:`KWConvNd` subclass to give the layer instead of the
            manager's (same state, another forward), e.g. :class:`KWConv2dAdaptivePadding`.
        zero_padding (bool): The KW layer gets padding 0 (the subclass pads itself).
    """

    layer_type: str
    kw_class: Optional[Type[KWConvNd]] = None
    zero_padding: bool = False


#: Plain layer types the rules replace (exact types: a subclass may change what the layer
#: computes, e.g. weight standardization). Toolbox wrappers register theirs with
#: :func:`register_layer_type`.
LAYER_TYPES: Dict[type, LayerKind] = {
    nn.Conv1d: LayerKind('conv1d'),
    nn.Conv2d: LayerKind('conv2d'),
    nn.Conv3d: LayerKind('conv3d'),
    nn.Linear: LayerKind('linear'),
}


def register_layer_type(cls: type, kind: LayerKind) -> None:
    """Let the rules replace layers of type ``cls`` (e.g. a toolbox's ``nn.Conv2d`` wrapper
    whose forward computes the same convolution)."""
    LAYER_TYPES[cls] = kind


def is_candidate_type(module: nn.Module) -> bool:
    """A convolution or linear layer (of any subclass): a layer the rules must place."""
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))


@dataclass
class LayoutRules:
    """The open choices of the paper's rules, with the paper's defaults.

    Args:
        budget (float): b, a whole number >= 1 or 1/k. Defaults to 1.
        static_depth (int): Layers within this many convolutions of the input stay static
            (1: the stem, as ResNet18; 2: as ResNet50; 0: none, as MobileNetV2 and ConvNeXt).
            Defaults to 1.
        handover (int): Layers of a block that changes the resolution or width within this many
            layers of the block's input join the previous stage of blocks (0 disables
            reassignment). Defaults to 1.
        separate (str | Sequence[str]): Kinds with warehouses of their own in every stage, from
            ``'pw'``, ``'dw'``, ``'group'`` (``'linear'`` always is: its cells are 1-D).
            Defaults to ``('dw', 'group', 'linear')``.
        static_layers (str | Sequence[str]): Module names (fnmatch patterns) kept static; each must
            name a candidate layer. Defaults to ().
        static_pooled (bool): Layers whose input is a pooled 1x1 map stay static.
            Defaults to True.
        linears (bool): ``nn.Linear`` layers on tokens / channels-last maps are candidates.
            Defaults to True.
        unsupported (str): ``'error'`` or ``'static'``: what to do with a convolution the rules
            cannot replace. Defaults to ``'error'``.
        cell_ratio (float, optional): Cell size / greatest common divisor on both sides (a
            side of one channel stays whole; any other must be cut into whole channels); None:
            1 for b >= 1, 1/2 below (where whole). Defaults to None.
        stage_by_width (bool): A change of width (block output channels) starts a stage as a
            change of resolution does (the paper's MobileNetV2 stages are its channel groups;
            ResNets change both at once). Defaults to True.
        stage_blocks (int, optional): Split a stage of more blocks into groups of consecutive
            blocks, each with its own warehouses (the paper splits ConvNeXt-Tiny's third stage
            of 9 blocks in three: 3). Defaults to None (no split).
    """

    budget: float = 1.0
    static_depth: int = 1
    handover: int = 1
    separate: Sequence[str] = DEFAULT_SEPARATE
    static_layers: Sequence[str] = ()
    static_pooled: bool = True
    linears: bool = True
    unsupported: str = 'error'
    cell_ratio: Optional[float] = None
    stage_by_width: bool = True
    stage_blocks: Optional[int] = None

    def __post_init__(self) -> None:
        # a single name is one entry, not a sequence of one-letter patterns
        for name in ('separate', 'static_layers'):
            value = getattr(self, name)
            setattr(self, name, (value, ) if isinstance(value, str) else tuple(value))

    def check(self) -> None:
        """One-line ValueErrors for values outside the allowed ones."""
        b = self.budget
        if not isinstance(b, (int, float)) or b <= 0 or not (
                (b >= 1 and float(b).is_integer()) or
                (b < 1 and abs(1 / b - round(1 / b)) < 1e-9)):
            raise ValueError(f'budget must be a whole number >= 1 or 1/k (0.5, 0.25, ...): the '
                             f"paper's one-to-one initialization needs it; got {b!r}")
        if self.stage_blocks is not None and (not isinstance(self.stage_blocks, int) or
                                              self.stage_blocks < 1):
            raise ValueError(f'stage_blocks must be None or an int >= 1, got '
                             f'{self.stage_blocks!r}')
        for name in ('static_depth', 'handover'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} must be an int >= 0, got {value!r}')
        bad = [k for k in self.separate if k not in KINDS or k == 'conv']
        if bad:
            raise ValueError(f"separate must hold kinds from ['pw', 'dw', 'group', 'linear'], "
                             f'got {list(self.separate)}')
        if self.unsupported not in ('error', 'static'):
            raise ValueError(f"unsupported must be 'error' or 'static', got "
                             f'{self.unsupported!r}')
        if self.cell_ratio is not None and not 0 < self.cell_ratio <= 1:
            raise ValueError(f'cell_ratio must be in (0, 1], got {self.cell_ratio!r}')


@dataclass
class LayerPlan:
    """One candidate layer: what the trace saw and what the rules decided."""

    name: str
    type_name: str
    weight_shape: Tuple[int, ...]
    kind: str
    in_channels: int = 0
    order: int = -1  # first call in the trace; -1: not executed
    in_shape: Tuple[int, ...] = ()
    out_shape: Tuple[int, ...] = ()
    depth: int = 0
    block: Optional[str] = None
    block_depth: int = 0
    stage: int = -1
    warehouse: Optional[str] = None  # None: static
    reason: str = ''
    value_only: bool = False  # a fused query/key/value projection: only the value is KW
    reassigned: bool = False  # handed over to the previous stage
    producer: Optional[str] = None  # the layer whose output it reads (through other ops)


@dataclass
class WarehousePlan:
    """A planned warehouse: its layers (module order) and cell ratios."""

    name: str
    kind: str
    layers: List[str] = field(default_factory=list)
    cell_outplane_ratio: float = 1.0
    cell_inplane_ratio: float = 1.0


@dataclass
class LayoutPlan:
    """The result of :func:`plan_layout`."""

    rules: LayoutRules
    layers: 'OrderedDict[str, LayerPlan]'
    warehouses: 'OrderedDict[str, WarehousePlan]'

    @property
    def static_layers(self) -> List[LayerPlan]:
        return [p for p in self.layers.values() if p.warehouse is None]


# ---------------------------------------------------------------------- trace
class _DepthMode(TorchFunctionMode):
    """Tags every tensor a forward makes with the number of layers on its longest path from
    the input (the layer hooks add one per layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.depth: Dict[int, int] = {}
        self.producer: Dict[int, Optional[str]] = {}  # the last layer on the deepest path
        self._keep: list = []  # tensors stay alive, so their ids are not reused

    def of(self, tensor) -> int:
        return self.depth.get(id(tensor), 0) if isinstance(tensor, torch.Tensor) else 0

    def producer_of(self, tensor) -> Optional[str]:
        return self.producer.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None

    def tag(self, tensors, depth: int, producer: Optional[str]) -> None:
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor):
                self.depth[id(t)] = depth
                self.producer[id(t)] = producer
                self._keep.append(t)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_flatten((args, kwargs or {}))[0]
                  if isinstance(t, torch.Tensor)]
        deepest = max(inputs, key=self.of, default=None)
        self.tag(out, self.of(deepest), self.producer_of(deepest))
        return out


def _first_tensor(args) -> Optional[torch.Tensor]:
    for t in tree_flatten(args)[0]:
        if isinstance(t, torch.Tensor):
            return t
    return None


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return 'linear'
    groups, cin = module.groups, module.in_channels
    if groups > 1:
        return 'dw' if groups == cin else 'group'
    return 'pw' if all(k == 1 for k in module.kernel_size) else 'conv'


def _weight_shape(module: nn.Module) -> Tuple[int, ...]:
    if isinstance(module, nn.Linear):
        return (module.out_features, module.in_features, 1)
    return tuple(module.weight.shape)


def find_blocks(model: nn.Module, candidates: Sequence[str]) -> Dict[str, Optional[str]]:
    """Layer name -> its block: the innermost element of a ``Sequential`` / ``ModuleList``
    (an indexed module) that holds two or more candidates; None outside any block."""
    modules = dict(model.named_modules())
    indexed = set()
    for name, module in modules.items():
        if isinstance(module, (nn.Sequential, nn.ModuleList)):
            indexed.update(f'{name}.{child}' if name else child for child in module._modules)
    counts: Dict[str, int] = {}
    for layer in candidates:
        parts = layer.split('.')
        for i in range(1, len(parts) + 1):
            prefix = '.'.join(parts[:i])
            counts[prefix] = counts.get(prefix, 0) + 1
    blocks = {}
    for layer in candidates:
        parts = layer.split('.')
        blocks[layer] = None
        for i in range(len(parts), 0, -1):
            prefix = '.'.join(parts[:i])
            if prefix in indexed and counts[prefix] >= 2:
                blocks[layer] = prefix
                break
    return blocks


@torch.no_grad()
def trace(model: nn.Module, inputs: torch.Tensor, layers: Dict[str, LayerPlan]) -> None:
    """Run ``model`` once on ``inputs`` (eval mode, restored afterwards) and fill in the
    execution order, shapes, depth and block depth of every planned layer."""
    modules = dict(model.named_modules())
    blocks = {p.block for p in layers.values() if p.block is not None}
    mode = _DepthMode()
    block_depth: Dict[str, int] = {}
    handles = []
    counter = [0]

    def block_pre(name):
        def hook(module, args):
            block_depth.setdefault(name, mode.of(_first_tensor(args)))
        return hook

    def layer_pre(name):
        def hook(module, args):
            plan = layers[name]
            x = _first_tensor(args)
            if plan.order < 0:
                plan.order = counter[0]
                counter[0] += 1
                plan.in_shape = tuple(x.shape)
                plan.depth = mode.of(x) + 1
                plan.producer = mode.producer_of(x)
                if plan.block is not None:
                    plan.block_depth = plan.depth - block_depth.get(plan.block, 0)
        return hook

    def layer_post(name):
        def hook(module, args, output):
            plan = layers[name]
            if not plan.out_shape:
                plan.out_shape = tuple(output.shape)
            mode.tag(output, max(mode.of(_first_tensor(args)) + 1, mode.of(output)), name)
        return hook

    for name in blocks:
        handles.append(modules[name].register_forward_pre_hook(block_pre(name)))
    for name in layers:
        handles.append(modules[name].register_forward_pre_hook(layer_pre(name)))
        handles.append(modules[name].register_forward_hook(layer_post(name)))
    was_training = model.training
    model.eval()
    try:
        with mode:
            model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def _spatial(plan: LayerPlan, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """The spatial / token sizes of an input or output of ``plan``'s layer."""
    if plan.kind == 'linear':
        return tuple(shape[1:-1])
    return tuple(shape[2:])


# ---------------------------------------------------------------------- plan
def plan_layout(model: nn.Module, rules: LayoutRules, inputs: torch.Tensor) -> LayoutPlan:
    """The warehouse layout of ``model`` under ``rules`` (see the module docstring).

    Raises:
        ValueError: One line each: no layer to replace, a ``static_layers`` pattern that names
            no layer, a layer type the rules cannot handle (unless ``unsupported='static'``),
            a budget whose cells cannot serve a layer.
    """
    rules.check()
    layers: 'OrderedDict[str, LayerPlan]' = OrderedDict()
    unsupported: List[Tuple[str, str]] = []
    for name, module in model.named_modules():
        if isinstance(module, KWConvNd):
            raise ValueError(f'{name} is already a KW layer ({type(module).__name__}); the '
                             'rules plan plain networks')
        if not is_candidate_type(module):
            continue
        reason = _unsupported_reason(module)
        if reason is None and isinstance(module, nn.Linear) and not rules.linears:
            continue
        plan = LayerPlan(name, type(module).__name__, _weight_shape(module), _kind(module),
                         module.in_features if isinstance(module, nn.Linear) else
                         module.in_channels)
        if reason is None and _is_fused_qkv(name, module):
            # as KW DeiT: the value part is a KW layer, query and key stay one static linear
            plan.value_only = True
            plan.weight_shape = (module.in_features, module.in_features, 1)
        if reason is not None:
            plan.reason = f'static: {reason}'
            unsupported.append((name, reason))
        layers[name] = plan
    if unsupported and rules.unsupported == 'error':
        name, reason = unsupported[0]
        more = f' (and {len(unsupported) - 1} more)' if len(unsupported) > 1 else ''
        raise ValueError(f'{name} ({layers[name].type_name}) cannot be a KW layer: {reason}'
                         f"{more}; pass unsupported='static' to keep such layers static")
    if not layers or all(p.reason for p in layers.values()):
        raise ValueError('no convolution or linear layer the rules can replace')

    for pattern in rules.static_layers:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in layers):
            raise ValueError(f'static_layers entry {pattern!r} names no convolution or linear '
                             f'layer; layers: {_preview(layers)}')

    for name, block in find_blocks(model, list(layers)).items():
        layers[name].block = block
    trace(model, inputs, layers)

    _place(layers, rules)
    if all(p.stage < 0 for p in layers.values()):
        reasons = sorted({p.reason for p in layers.values()})
        raise ValueError('no convolution or linear layer the rules can replace: every one '
                         f'stays static ({"; ".join(reasons)})')
    warehouses = _group(layers, rules)
    return LayoutPlan(rules, layers, warehouses)


def _is_fused_qkv(name: str, module: nn.Module) -> bool:
    """A ViT's fused query/key/value projection (``attn.qkv``, ``3C`` outputs)."""
    return isinstance(module, nn.Linear) and name.rsplit('.', 1)[-1] == 'qkv' and \
        module.out_features == 3 * module.in_features


class StaticQKWithKWValue(nn.Module):
    """A fused ``qkv`` linear whose query and key stay one static ``Linear(C, 2C)`` (``qk``)
    and whose value is a KW linear (``v``), as KW DeiT; the output is ``[q, k, v]`` as the
    fused layer's."""

    def __init__(self, qk: nn.Linear, v: nn.Module) -> None:
        super().__init__()
        self.qk = qk
        self.v = v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.qk(x), self.v(x)], dim=-1)


def _preview(layers: Dict[str, LayerPlan], limit: int = 6) -> str:
    names = list(layers)
    return ', '.join(names[:limit]) + (f', ... ({len(names)} in all)'
                                        if len(names) > limit else '')


def _unsupported_reason(module: nn.Module) -> Optional[str]:
    """Why a convolution cannot become a KW layer, or None if it can."""
    for cls, reason in UNSUPPORTED_REASON.items():
        if isinstance(module, cls):
            return reason
    if type(module) not in LAYER_TYPES:
        return (f'its type {type(module).__name__} is not one the rules know to compute a plain '
                f'convolution (a subclass may transform its kernel or input)')
    if isinstance(module, nn.Linear):
        return None
    if module.padding_mode != 'zeros':
        return f"padding_mode={module.padding_mode!r} (KW layers pad with zeros)"
    if isinstance(module.padding, str):
        if module.padding == 'same' and any(d * (k - 1) % 2 for k, d in
                                            zip(module.kernel_size, module.dilation)):
            return "padding='same' with an even kernel pads asymmetrically"
    return None


def _numeric_padding(module: nn.Module) -> Tuple[int, ...]:
    if isinstance(module.padding, str):
        if module.padding == 'valid':
            return (0, ) * len(module.kernel_size)
        return tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
    return tuple(module.padding)


def _place(layers: 'OrderedDict[str, LayerPlan]', rules: LayoutRules) -> None:
    """Decide static or KW, and the stage, of every layer."""
    def area(p: LayerPlan, shape: Tuple[int, ...]) -> int:
        return math.prod(_spatial(p, shape))

    executed = sorted((p for p in layers.values() if p.order >= 0), key=lambda p: p.order)
    # Layers on pooled 1x1 maps (SE branches) are told apart from a last stage of 1x1 maps by
    # the trace input being large enough to leave every stage larger than one pixel.
    pooled = {p.name for p in executed if _spatial(p, p.in_shape) and area(p, p.in_shape) == 1}
    smallest = min((area(p, p.out_shape) for p in executed
                    if p.name not in pooled and _spatial(p, p.in_shape)), default=2)
    if pooled and smallest == 1:
        raise ValueError(f'the trace input leaves 1x1 maps in the network ({min(pooled)} reads '
                         'one): layers on pooled maps cannot be told apart; use a larger '
                         'trace_size')
    # A block's output: the smallest map its layers make and the width of its last layer; its
    # input: the largest map its first layers read and their input width.
    areas: Dict[str, List[int]] = {}
    block_width: Dict[str, int] = {}
    block_in: Dict[str, Tuple[int, int]] = {}
    for p in executed:
        if p.block is None or p.name in pooled:
            continue
        areas.setdefault(p.block, []).append(area(p, p.out_shape))
        block_width[p.block] = p.weight_shape[0]
        if p.block_depth == 1:
            key = (area(p, p.in_shape), p.in_channels if rules.stage_by_width else 0)
            block_in[p.block] = max(block_in.get(p.block, key), key)
    block_out = {b: (min([a for a in v if a > 1] or v),
                     block_width[b] if rules.stage_by_width else 0) for b, v in areas.items()}

    def natural(p: LayerPlan) -> Tuple[int, int]:
        if p.block in block_out:
            return block_out[p.block]
        return area(p, p.out_shape), (p.weight_shape[0] if rules.stage_by_width else 0)

    # Stages: the distinct (resolution, width) of blocks and layers, in execution order.
    stage_of: Dict[Tuple[int, int], int] = {}
    for p in executed:
        if p.name not in pooled:
            stage_of.setdefault(natural(p), len(stage_of))
    block_stages = {block_out[p.block] for p in executed if p.block in block_out}

    for p in sorted(layers.values(), key=lambda p: (p.order < 0, p.order)):
        if p.reason:  # unsupported, kept static by the user's choice
            continue
        if p.order < 0:
            p.reason = 'static: not executed by the trace forward'
            continue
        if any(fnmatch.fnmatchcase(p.name, pat) for pat in rules.static_layers):
            p.reason = 'static: named in static_layers'
            continue
        if p.depth <= rules.static_depth:
            p.reason = f'static: depth {p.depth} <= static_depth {rules.static_depth}'
            continue
        if p.name in pooled:
            if rules.static_pooled:
                p.reason = 'static: its input is a pooled 1x1 map (an attention branch)'
                continue
            producer = layers.get(p.producer) if p.producer else None
            if producer is None or producer.stage < 0:
                raise ValueError(f'{p.name} reads a pooled map of no KW layer: keep it static '
                                 '(static_pooled=True)')
            p.stage = producer.stage
            p.reason = f'on a pooled map, with {producer.name}, whose output it reads'
            continue
        if p.kind == 'linear' and not _spatial(p, p.in_shape):
            p.reason = 'static: a linear layer on vectors (no tokens to pool)'
            continue
        key = natural(p)
        p.stage = stage_of[key]
        p.reason = f'output {key[0]} px' + (f' x {key[1]} channels' if key[1] else '')
        producer = layers.get(p.producer) if p.producer else None
        if p.block is None and key not in block_stages and producer is not None and \
                producer.stage >= 0 and producer.block is not None:
            # a layer after the blocks of a stage (a final 1x1 convolution) would have a
            # warehouse of its own: it joins the stage of the layer it reads
            p.stage = producer.stage
            p.reason = f'joins the stage of {producer.name}, whose output it reads'
            continue
        if p.block is not None and rules.handover and p.block_depth <= rules.handover:
            before = block_in.get(p.block)
            # into the previous stage of blocks (a stem is no stage to join)
            if before is not None and before != block_out[p.block] and before in block_stages:
                p.stage = stage_of[before]
                p.reassigned = True
                p.reason = (f'reassigned to the previous stage: {p.block_depth} layer(s) from '
                            f'the input of {p.block}, which changes the '
                            f'{"resolution" if before[0] != key[0] else "width"}')


def _group(layers: 'OrderedDict[str, LayerPlan]',
           rules: LayoutRules) -> 'OrderedDict[str, WarehousePlan]':
    """Warehouses by (stage, kind) in module order of their first layer; renumber the stages
    that hold KW layers from 0."""
    separate = set(rules.separate) | {'linear'}
    kw = [p for p in layers.values() if p.stage >= 0]
    renumber = {s: i for i, s in enumerate(sorted({p.stage for p in kw}))}
    for p in kw:
        p.stage = renumber[p.stage]
    group = _block_groups(kw, rules.stage_blocks)
    warehouses: 'OrderedDict[str, WarehousePlan]' = OrderedDict()
    for p in kw:
        stage = f'{p.stage}' if group.get(p.name) is None else f'{p.stage}.{group[p.name]}'
        p.reason = f'stage {stage}, {p.reason}'
        if p.value_only:
            p.reason += '; value part only (query and key stay one static linear)'
        kind = p.kind if p.kind in separate else 'conv'
        name = f'stage{stage}_{kind}'
        p.warehouse = name
        warehouses.setdefault(name, WarehousePlan(name, kind)).layers.append(p.name)
    for w in warehouses.values():
        _cell_ratios(w, [layers[n] for n in w.layers], rules)
    return warehouses


def _block_groups(kw: List[LayerPlan], stage_blocks: Optional[int]) -> Dict[str, int]:
    """Layer name -> its group of consecutive blocks in its stage, for stages of more than
    ``stage_blocks`` blocks (split into equal groups, the earlier ones larger, as the paper
    splits ConvNeXt-Tiny's third stage); layers of other stages are absent.

    Layers outside blocks join the first group, layers handed over to a stage its last.
    """
    if not stage_blocks:
        return {}
    blocks: Dict[int, List[str]] = {}
    for p in sorted(kw, key=lambda p: p.order):
        if p.block is not None and not p.reassigned and p.block not in blocks.get(p.stage, []):
            blocks.setdefault(p.stage, []).append(p.block)
    group_of: Dict[str, int] = {}
    last: Dict[int, int] = {}
    for stage, names in blocks.items():
        parts = math.ceil(len(names) / stage_blocks)
        if parts < 2:
            continue
        sizes = [len(names) // parts + (g < len(names) % parts) for g in range(parts)]
        index = 0
        for g, size in enumerate(sizes):
            for name in names[index:index + size]:
                group_of[name] = g
            index += size
        last[stage] = parts - 1
    groups = {}
    for p in kw:
        if p.stage not in last:
            continue
        if p.reassigned:
            groups[p.name] = last[p.stage]
        else:
            groups[p.name] = group_of.get(p.block, 0)
    return groups


def _cell_ratios(w: WarehousePlan, members: List[LayerPlan], rules: LayoutRules) -> None:
    """The paper's cells: the gcds (halved below b = 1 where whole); refuse a budget whose
    one-to-one initialization cannot serve every layer."""
    b = float(rules.budget)
    shapes = [m.weight_shape for m in members]
    gcd_out = math.gcd(*[s[0] for s in shapes])
    gcd_in = math.gcd(*[s[1] for s in shapes])
    ratio = rules.cell_ratio if rules.cell_ratio is not None else (1.0 if b >= 1 else 0.5)
    if rules.cell_ratio is not None:
        # a ratio the user chose must cut every side it can (a side of one channel cannot be)
        for side, gcd in (('output', gcd_out), ('input', gcd_in)):
            if gcd > 1 and not (gcd * ratio).is_integer():
                raise ValueError(
                    f'cell_ratio {ratio:g} cannot cut the cells of warehouse {w.name!r}: the '
                    f'greatest common divisor of its layers\' {side} channels is {gcd}, and '
                    f'{gcd} x {ratio:g} is not a whole number; use a ratio 1/k that divides it '
                    'or None (the paper\'s cells)')
    w.cell_outplane_ratio = ratio if (gcd_out * ratio).is_integer() else 1.0
    w.cell_inplane_ratio = ratio if (gcd_in * ratio).is_integer() else 1.0
    co, ci = int(gcd_out * w.cell_outplane_ratio), int(gcd_in * w.cell_inplane_ratio)
    for m in members:
        mixtures = count_mixtures(m.weight_shape, co, ci)
        if mixtures > MAX_MIXTURES:
            raise ValueError(
                f'cells [{co}, {ci}] of warehouse {w.name!r} (greatest common divisors of its '
                f'{len(members)} layers) cut {m.name} {list(m.weight_shape)} into {mixtures} '
                f'mixtures (at most {MAX_MIXTURES}: its attention would output that many sets of '
                'logits); separate its kind (separate=...) or keep it static (static_layers)')
    if b >= 1:
        return
    k = round(1 / b)
    for m in members:
        mixtures = count_mixtures(m.weight_shape, co, ci)
        if mixtures % k:
            raise ValueError(
                f'budget {b:g} cannot serve {m.name} in warehouse {w.name!r}: cells [{co}, {ci}] '
                f'cut its kernel {list(m.weight_shape)} into {mixtures} mixtures, not a multiple '
                f'of 1/b = {k} (the one-to-one initialization needs one); use b = 1/2 or >= 1, '
                f'or keep the layer static')


# ---------------------------------------------------------------------- apply
def _parent(model: nn.Module, name: str) -> Tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition('.')
    return (model.get_submodule(parent_name) if parent_name else model), child


def apply_plan(model: nn.Module, plan: LayoutPlan, manager_kwargs: Optional[dict] = None,
               attach: Callable[[nn.Module, WarehouseManager], None] = None) -> WarehouseManager:
    """Replace the planned layers of ``model`` by KW layers and build the warehouses.

    Layers are reserved in module order, so warehouses are created (and numbered) in the
    module order of their first layer and cells are handed out in module order, as the
    hand-built backbones do.

    Args:
        model (nn.Module): The plain network :func:`plan_layout` planned.
        plan (LayoutPlan): Its plan.
        manager_kwargs (dict, optional): More :class:`WarehouseManager` arguments (attention
            norm, function, non-local basis; per-warehouse ``reduction`` and cell ratios given
            by the user replace the plan's).
        attach (callable, optional): Registers the manager in ``model`` before allocation.
            Defaults to ``model.warehouse_manager = manager``.

    Returns:
        WarehouseManager: The manager holding the warehouses (a submodule of ``model``).
    """
    kwargs = dict(manager_kwargs or {})
    presets = dict(
        cell_num_ratio={w: float(plan.rules.budget) for w in plan.warehouses},
        cell_outplane_ratio={w.name: w.cell_outplane_ratio for w in plan.warehouses.values()},
        cell_inplane_ratio={w.name: w.cell_inplane_ratio for w in plan.warehouses.values()})
    manager = WarehouseManager(presets=presets, **kwargs)
    modules = dict(model.named_modules())
    for p in plan.layers.values():
        if p.warehouse is None:
            continue
        old = modules[p.name]
        kind = LAYER_TYPES[type(old)]
        if p.value_only:
            dim = old.in_features
            qk = nn.Linear(dim, 2 * dim, bias=old.bias is not None)
            with torch.no_grad():  # the fused layer's query and key rows, as initialized
                qk.weight.copy_(old.weight[:2 * dim])
                if old.bias is not None:
                    qk.bias.copy_(old.bias[:2 * dim])
            new = StaticQKWithKWValue(qk, manager.reserve(
                dim, dim, bias=old.bias is not None, warehouse_name=p.warehouse,
                layer_type='linear'))
        elif kind.layer_type == 'linear':
            new = manager.reserve(old.in_features, old.out_features, bias=old.bias is not None,
                                  warehouse_name=p.warehouse, layer_type='linear')
        else:
            padding = (0, ) * len(old.kernel_size) if kind.zero_padding else \
                _numeric_padding(old)
            new = manager.reserve(old.in_channels, old.out_channels, old.kernel_size,
                                  stride=old.stride, padding=padding, dilation=old.dilation,
                                  groups=old.groups, bias=old.bias is not None,
                                  warehouse_name=p.warehouse, layer_type=kind.layer_type)
            if kind.kw_class is not None:
                # same state, another forward (e.g. input-dependent padding)
                new.__class__ = kind.kw_class
        parent, child = _parent(model, p.name)
        setattr(parent, child, new)
    if attach is None:
        model.warehouse_manager = manager
    else:
        attach(model, manager)
    manager.store()
    manager.allocate(model)
    return manager


def format_plan(plan: LayoutPlan, manager: WarehouseManager, model: nn.Module) -> str:
    """The plan as text: every warehouse (cell shape, m, n, b, cell and attention parameters,
    its layers with their kernel shape, M and why they are there) and every static layer with
    the reason.

    Args:
        plan (LayoutPlan): The plan.
        manager (WarehouseManager): The warehouses built from it.
        model (nn.Module): The model the plan was applied to (for the layers' attentions).
    """
    modules = dict(model.named_modules())
    kw = [p for p in plan.layers.values() if p.warehouse]
    lines = [f'budget {plan.rules.budget:g}: {len(plan.warehouses)} warehouses, {len(kw)} KW '
             f'layers, {len(plan.static_layers)} static']
    for spec in manager.specs:
        w = plan.warehouses[spec.name]
        cells = spec.num_cells * math.prod(spec.cell_shape)
        attention = sum(p.numel() for name in w.layers
                        for p in _kw_conv(modules[name]).attention.parameters())
        lines.append(f'{spec.name}: cell {list(spec.cell_shape)}, m={spec.num_mixtures}, '
                     f'n={spec.num_cells}, b={spec.cell_num_ratio:g}, {cells:,} cell + '
                     f'{attention:,} attention parameters, {len(w.layers)} layers')
        for name in w.layers:
            p = plan.layers[name]
            mixtures = _kw_conv(modules[name]).attention.num_mixtures
            lines.append(f'  {name:<36} {p.kind:<6} {str(list(p.weight_shape)):<20} '
                         f'M={mixtures:<5} {p.reason}')
    if plan.static_layers:
        lines.append('static layers:')
        for p in plan.static_layers:
            lines.append(f'  {p.name:<36} {p.kind:<6} {str(list(p.weight_shape)):<20} '
                         f'{p.reason}')
    return '\n'.join(lines)


def _kw_conv(module: nn.Module) -> KWConvNd:
    """The KW convolution of a planned layer (a KWLinear holds one; a fused qkv its value)."""
    if isinstance(module, StaticQKWithKWValue):
        module = module.v
    return module if isinstance(module, KWConvNd) else module.conv
