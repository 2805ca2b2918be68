"""Converting checkpoints of the reference KernelWarehouse release to kw_mm / mmpretrain.

A reference checkpoint (OSVAI/KernelWarehouse: a state dict, or a dict holding it under
``'model'``, ``'model_ema'`` or ``'state_dict'``) becomes a state-dict-only checkpoint
``{'state_dict': ..., 'meta': {...}}`` for an mmpretrain ``ImageClassifier`` built from
:mod:`kw_mm.models.paper_variants` or from a config file.

Steps (each refuses with a message that names both sides):

1. family from the key patterns (:func:`detect_family`): ResNet18/50, MobileNetV2 1.0/0.5,
   ConvNeXt-Tiny; KW or plain;
2. keys renamed by the family's module (:mod:`.resnet`, :mod:`.mobilenet_v2`, :mod:`.convnext`);
   every source key must map to exactly one model key;
3. budget and layout: every converted key and shape is compared with each candidate model of
   the family, built on the meta device (no memory, no initialization); exactly one must fit;
4. the requested model (``variant`` or ``config``), if any, must be that fit; otherwise the
   error names what the checkpoint is and what the model expects
   (``checkpoint is kw4x_resnet50 (warehouse 0: 348 cells) but config kw1x-resnet50 ...
   expects 87``).

The attention temperature is not part of either format: a converted model runs at t = 0, like a
freshly built reference model, unless a hook or :func:`kw_mm.set_temperature` changes it.
"""
import argparse
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from kw_mm.models.paper_variants import PAPER_VARIANTS, VARIANTS_BY_NAME, PaperVariant
from kw_mm.utils.checkpoint import load_file
from . import convnext, mobilenet_v2, resnet

#: Where a reference training checkpoint keeps the weights, in the order they are looked for.
WRAPPER_KEYS = ('model', 'model_ema', 'state_dict')

Shapes = Dict[str, Tuple[int, ...]]


class OfficialCheckpointError(ValueError):
    """A reference checkpoint cannot be converted, or does not fit the requested model."""


# --------------------------------------------------------------------------- loading
def load_official_checkpoint(path: str, key: str = 'auto') -> Tuple[Dict[str, torch.Tensor], str]:
    """The reference state dict stored in ``path`` and where it was found.

    The file is loaded with ``weights_only=True``. The reference trainer also stores its
    ``argparse.Namespace`` of arguments next to the weights; that plain data class is allowed
    too, nothing else.

    Args:
        path (str): The checkpoint file.
        key (str): ``'auto'`` (a bare state dict, else the first of ``'model'``,
            ``'model_ema'``, ``'state_dict'`` present), or one of those keys. Defaults to
            ``'auto'``.

    Returns:
        tuple: ``(state_dict, where)``; ``where`` is ``'state dict'`` or ``"['model']"`` etc.
    """
    torch.serialization.add_safe_globals([argparse.Namespace])
    return unwrap_state_dict(load_file(path), key=key, source=path)


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap_state_dict(obj: object, key: str = 'auto',
                      source: str = 'checkpoint') -> Tuple[Dict[str, torch.Tensor], str]:
    """The state dict inside a loaded checkpoint (see :func:`load_official_checkpoint`)."""
    allowed = ('auto', ) + WRAPPER_KEYS
    if key not in allowed:
        raise OfficialCheckpointError(f'key must be one of {list(allowed)}, got {key!r}')
    if not isinstance(obj, Mapping):
        raise OfficialCheckpointError(f'{source} holds a {type(obj).__name__}, not a state dict '
                                      'or a dict holding one')
    if key == 'auto':
        if _is_state_dict(obj):
            return _strip_module_prefix(OrderedDict(obj)), 'state dict'
        for candidate in WRAPPER_KEYS:
            if _is_state_dict(obj.get(candidate)):
                return _strip_module_prefix(OrderedDict(obj[candidate])), f'[{candidate!r}]'
        raise OfficialCheckpointError(
            f'{source} is neither a state dict nor a dict holding one under '
            f'{list(WRAPPER_KEYS)}; its top-level keys: {sorted(map(str, obj))[:12]}')
    if not _is_state_dict(obj.get(key)):
        present = [k for k in WRAPPER_KEYS if _is_state_dict(obj.get(k))]
        raise OfficialCheckpointError(f'{source} has no state dict under {key!r}; state dicts '
                                      f'found under: {present or "none"}')
    return _strip_module_prefix(OrderedDict(obj[key])), f'[{key!r}]'


def _strip_module_prefix(state_dict: 'OrderedDict') -> 'OrderedDict':
    # A state dict saved from a DistributedDataParallel wrapper prefixes every key.
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return OrderedDict((k[len('module.'):], v) for k, v in state_dict.items())
    return state_dict


# --------------------------------------------------------------------------- family
@dataclass(frozen=True)
class Family:
    """What the key patterns say about a reference checkpoint."""

    name: str  # PaperVariant.family
    kw: bool  # KernelWarehouse (has warehouses) or the plain baseline


def _count_blocks(keys: Sequence[str], pattern: str) -> List[int]:
    regex = re.compile(pattern)
    found: Dict[int, set] = {}
    for k in keys:
        m = regex.match(k)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return [len(found.get(i, ())) for i in range(min(found, default=0), max(found, default=-1) + 1)]


def detect_family(state_dict: Mapping[str, torch.Tensor]) -> Family:
    """The model family of a reference state dict, from its key patterns.

    Raises:
        OfficialCheckpointError: If the keys match no released family, naming what was seen.
    """
    keys = list(state_dict)
    kw = any(k.startswith('warehouse_manager.weights.') for k in keys)
    if any(k.startswith('layer1.') for k in keys) and 'conv1.weight' in state_dict:
        blocks = _count_blocks(keys, r'^layer(\d)\.(\d+)\.')
        bottleneck = any(re.match(r'^layer\d\.\d+\.(conv3|bn3)\.', k) for k in keys)
        depths = {(False, (2, 2, 2, 2)): 'resnet18', (True, (3, 4, 6, 3)): 'resnet50'}
        name = depths.get((bottleneck, tuple(blocks)))
        if name is None:
            raise OfficialCheckpointError(
                f'the checkpoint is a ResNet with {"bottleneck" if bottleneck else "basic"} '
                f'blocks per stage {blocks}; the release has ResNet18 (basic, [2, 2, 2, 2]) and '
                'ResNet50 (bottleneck, [3, 4, 6, 3])')
        return Family(name, kw)
    if any(k.startswith('features.') for k in keys) and any(
            k.startswith('classifier') for k in keys):
        stem = state_dict.get('features.0.1.weight')
        widths = {32: 'mobilenet-v2', 16: 'mobilenet-v2-w0.5'}
        width = None if stem is None else int(stem.shape[0])
        if width not in widths:
            raise OfficialCheckpointError(
                f'the checkpoint is a MobileNetV2 whose stem has {width} channels '
                '(features.0.1.weight); the release has width 1.0 (32) and 0.5 (16)')
        return Family(widths[width], kw)
    if any(k.startswith('downsample_layers.') for k in keys) and any(
            k.startswith('stages.') for k in keys):
        stem = state_dict.get('downsample_layers.0.1.weight')
        depths = _count_blocks(keys, r'^stages\.(\d)\.(\d+)\.')
        width = None if stem is None else int(stem.shape[0])
        if width != 96 or depths != [3, 3, 9, 3]:
            raise OfficialCheckpointError(
                f'the checkpoint is a ConvNeXt of width {width} and depths {depths}; the '
                'release has ConvNeXt-Tiny only (96, [3, 3, 9, 3])')
        return Family('convnext-tiny', kw)
    raise OfficialCheckpointError(
        'the keys match no model of the reference release (ResNet: conv1/layer1..4/fc; '
        'MobileNetV2: features/classifier; ConvNeXt: downsample_layers/stages/head); '
        f'first keys: {keys[:6]}')


# --------------------------------------------------------------------------- key mapping
def _key_mapper(family: Family,
                keys: Sequence[str]) -> Callable[[str], str]:
    if family.name.startswith('resnet'):
        return resnet.to_mmpretrain_key
    if family.name.startswith('mobilenet-v2'):
        classifier = mobilenet_v2.find_classifier_warehouse(keys)
        return lambda k: mobilenet_v2.to_mmpretrain_key(k, classifier)
    return convnext.to_mmpretrain_key


def _tensor_converter(family: Family) -> Callable[[str, torch.Tensor], torch.Tensor]:
    if family.name == 'convnext-tiny':
        return convnext.convert_tensor
    return lambda key, tensor: tensor


def convert_keys(state_dict: Mapping[str, torch.Tensor],
                 family: Optional[Family] = None) -> 'OrderedDict[str, torch.Tensor]':
    """Rename (and, for ConvNeXt's layer scale, reshape) every tensor of a reference state dict.

    Nothing is dropped: every source key must map to a model key, and no two to the same one.

    Raises:
        OfficialCheckpointError: Listing every key that maps nowhere or collides.
    """
    family = family or detect_family(state_dict)
    to_key = _key_mapper(family, list(state_dict))
    to_tensor = _tensor_converter(family)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    source: Dict[str, str] = {}
    unknown, collisions = [], []
    for key, tensor in state_dict.items():
        try:
            new_key = to_key(key)
        except KeyError:
            unknown.append(key)
            continue
        if new_key in out:
            collisions.append(f'{source[new_key]} and {key} -> {new_key}')
            continue
        source[new_key] = key
        out[new_key] = to_tensor(key, tensor)
    problems = []
    if unknown:
        problems.append(f'{len(unknown)} keys are not keys of a reference {family.name}: '
                        f'{_first(unknown)}')
    if collisions:
        problems.append('keys that map to the same model key: ' + '; '.join(collisions[:5]))
    if problems:
        raise OfficialCheckpointError('cannot convert the checkpoint: ' + '; '.join(problems))
    return out


def _first(items: Sequence[str], limit: int = 5) -> str:
    shown = ', '.join(items[:limit])
    return shown + (f', ... ({len(items)} in all)' if len(items) > limit else '')


# --------------------------------------------------------------------------- candidate models
# Tensor constructors sent to the meta device while a candidate model is built. Ranges
# (arange / linspace) stay on the CPU: constructors turn them into Python numbers (drop-path
# rates, with .item()), which a meta tensor cannot give; they never become parameters.
_META_CONSTRUCTORS = {
    torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full, torch.rand,
    torch.randn, torch.randint, torch.tensor, torch.as_tensor, torch.eye
}


class _MetaConstructors(TorchFunctionMode):
    """Creates parameters and buffers on the meta device: shapes without memory or init."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _META_CONSTRUCTORS and kwargs.get('device') is None:
            kwargs['device'] = 'meta'
        return func(*args, **kwargs)


def build_model(model_cfg: dict, device: str = 'cpu') -> nn.Module:
    """Build an mmpretrain model config through the real registry.

    Args:
        model_cfg (dict): A model config (``type`` with or without scope prefix).
        device (str): ``'cpu'`` for a real model, ``'meta'`` for shapes only. Defaults to
            ``'cpu'``.
    """
    if device not in ('cpu', 'meta'):
        raise ValueError(f"device must be 'cpu' or 'meta', got {device!r}")
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    import kw_mm  # noqa: F401  (registers the kw_mm modules)
    if device != 'meta':
        return MODELS.build(model_cfg)
    with _MetaConstructors():
        return MODELS.build(model_cfg)


def model_shapes(model_cfg: dict) -> Shapes:
    """Key -> shape of the state dict of the model ``model_cfg`` (built on the meta device)."""
    try:
        model = build_model(model_cfg, device='meta')
    except (RuntimeError, NotImplementedError):
        # A constructor that needs real numbers (e.g. .item() of a parameter): build for real.
        model = build_model(model_cfg)
    return OrderedDict((k, tuple(v.shape)) for k, v in model.state_dict().items())


_SHAPE_CACHE: Dict[str, Shapes] = {}


def variant_shapes(variant: PaperVariant) -> Shapes:
    """:func:`model_shapes` of a paper variant (1000 classes), cached per process."""
    if variant.name not in _SHAPE_CACHE:
        _SHAPE_CACHE[variant.name] = model_shapes(variant.model_cfg())
    return _SHAPE_CACHE[variant.name]


# --------------------------------------------------------------------------- comparison
@dataclass
class Mismatch:
    """How a converted checkpoint differs from a model's state dict."""

    shapes: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # key, ckpt, model
    missing: List[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: List[str] = field(default_factory=list)  # in the checkpoint, not in the model

    def __bool__(self) -> bool:
        return bool(self.shapes or self.missing or self.unexpected)

    @property
    def size(self) -> int:
        return len(self.shapes) + len(self.missing) + len(self.unexpected)


def compare(converted: Mapping[str, torch.Tensor], shapes: Shapes) -> Mismatch:
    """Every difference between converted tensors and a model's key -> shape."""
    mismatch = Mismatch()
    for key, shape in shapes.items():
        if key not in converted:
            mismatch.missing.append(key)
        elif tuple(converted[key].shape) != tuple(shape):
            mismatch.shapes.append((key, tuple(converted[key].shape), tuple(shape)))
    mismatch.unexpected = [k for k in converted if k not in shapes]
    return mismatch


_WAREHOUSE_KEY = re.compile(r'^(?:(\w+)\.)?warehouse_manager\.weights\.(\d+)$')


def _warehouse_label(key: str) -> Optional[str]:
    m = _WAREHOUSE_KEY.match(key)
    if not m:
        return None
    owner = '' if m.group(1) in (None, 'backbone') else f'{m.group(1)} '
    return f'{owner}warehouse {m.group(2)}'


def _shape_text(shape: tuple) -> str:
    return '[' + ', '.join(map(str, shape)) + ']'


def headline(mismatch: Mismatch) -> Tuple[str, str]:
    """The most telling difference: (what the checkpoint has, what the model expects).

    A warehouse that differs is the clearest sign of another budget or layout, so it comes
    first, said in cells (``warehouse 0: 348 cells`` vs ``87``).
    """
    ordered = sorted(mismatch.shapes, key=lambda s: _warehouse_label(s[0]) is None)
    if ordered:
        key, have, want = ordered[0]
        label = _warehouse_label(key)
        if label and have[1:] == want[1:]:
            return f'{label}: {have[0]} cells', f'{want[0]}'
        if label:
            return (f'{label}: {have[0]} cells of {_shape_text(have[1:])}',
                    f'{want[0]} cells of {_shape_text(want[1:])}')
        return f'{key}: {_shape_text(have)}', _shape_text(want)
    have = (f'{len(mismatch.unexpected)} keys the model does not have, e.g. '
            f'{mismatch.unexpected[0]}' if mismatch.unexpected else 'no other keys')
    want = (f'{len(mismatch.missing)} keys the checkpoint does not have, e.g. '
            f'{mismatch.missing[0]}' if mismatch.missing else 'no other keys')
    return have, want


def describe(mismatch: Mismatch, limit: int = 8) -> str:
    """Every difference, a few of each kind."""
    lines = []
    if mismatch.shapes:
        shown = [f'{k}: checkpoint {_shape_text(h)} vs model {_shape_text(w)}'
                 for k, h, w in mismatch.shapes[:limit]]
        more = f' ... ({len(mismatch.shapes)} in all)' if len(mismatch.shapes) > limit else ''
        lines.append('shape mismatches: ' + '; '.join(shown) + more)
    if mismatch.missing:
        lines.append('missing in checkpoint: ' + _first(mismatch.missing, limit))
    if mismatch.unexpected:
        lines.append('not in model: ' + _first(mismatch.unexpected, limit))
    return '\n  '.join(lines)


def variant_label(variant: PaperVariant) -> str:
    """The reference release's name of a variant if it was released, else kw_mm's name."""
    return variant.official or variant.name


@dataclass
class Detection:
    """Which candidate variants of a family fit a converted checkpoint."""

    family: Family
    fits: List[PaperVariant]
    closest: List[Tuple[PaperVariant, Mismatch]]  # every candidate, best first


def candidates(family: Family) -> List[PaperVariant]:
    """Paper variants of the family, KW ones for a KW checkpoint, the baseline otherwise."""
    return [v for v in PAPER_VARIANTS
            if v.family == family.name and (v.budget is not None) == family.kw]


def detect_variant(state_dict: Mapping[str, torch.Tensor],
                   converted: Optional[Mapping[str, torch.Tensor]] = None) -> Detection:
    """The paper variants whose models every converted key and shape fits.

    Works on shapes only, so meta tensors (no data) can be passed.
    """
    family = detect_family(state_dict)
    if converted is None:
        converted = convert_keys(state_dict, family)
    results = [(v, compare(converted, variant_shapes(v))) for v in candidates(family)]
    results.sort(key=lambda r: r[1].size)
    return Detection(family, [v for v, m in results if not m], results)


def _checkpoint_name(detection: Detection) -> str:
    if len(detection.fits) == 1:
        return variant_label(detection.fits[0])
    return f'an unknown {"KW " if detection.family.kw else ""}{detection.family.name}'


def _no_fit_error(detection: Detection) -> OfficialCheckpointError:
    if detection.fits:  # several fits: the candidate table is ambiguous
        names = [v.name for v in detection.fits]
        return OfficialCheckpointError(f'the checkpoint fits several variants: {names}; '
                                       'choose one with --variant or --config')
    if not detection.closest:
        return OfficialCheckpointError(f'no paper variant of family {detection.family.name} '
                                       f'(kw={detection.family.kw}) to compare with')
    variant, mismatch = detection.closest[0]
    have, want = headline(mismatch)
    tried = ', '.join(variant_label(v) for v, _ in detection.closest)
    return OfficialCheckpointError(
        f'the checkpoint is {_checkpoint_name(detection)} that fits no released variant '
        f'(tried {tried}); closest is {variant_label(variant)}: the checkpoint has ({have}) '
        f'but {variant_label(variant)} expects {want}\n  {describe(mismatch)}')


# --------------------------------------------------------------------------- the target model
@dataclass
class Target:
    """The model a checkpoint is converted for."""

    label: str  # e.g. "variant kw1x_resnet50" or "config kw1x-resnet50_8xb512-300e_in1k"
    model_cfg: dict
    variant: Optional[PaperVariant] = None
    config_path: Optional[str] = None

    def shapes(self) -> Shapes:
        if self.variant is not None:
            return variant_shapes(self.variant)
        return model_shapes(self.model_cfg)


def resolve_variant(name: str) -> PaperVariant:
    """A paper variant by kw_mm name or by the reference release's name."""
    if name in VARIANTS_BY_NAME:
        return VARIANTS_BY_NAME[name]
    released = [v for v in PAPER_VARIANTS if v.official == name]
    if len(released) == 1:
        return released[0]
    raise OfficialCheckpointError(
        f'unknown variant {name!r}; choose from {sorted(VARIANTS_BY_NAME)} (or a released name: '
        f'{sorted(v.official for v in PAPER_VARIANTS if v.official)})')


_CONFIG_FAMILY = {'resnet18': 'resnet18', 'resnet50': 'resnet50', 'mobilenet-v2': 'mobilenet-v2',
                  'mobilenet-v2-w0.5': 'mobilenet-v2-w0.5', 'convnext-tiny': 'convnext-tiny'}
#: The repository's configs (present in a source checkout).
CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'configs')


def config_stem(variant: PaperVariant) -> str:
    """The config-name prefix of a variant, e.g. ``kw1x-resnet50`` or ``mobilenet-v2-w0.5``.

    The configs are named ``{stem}_{N}xb{bs}-{recipe}_in1k.py`` (mmpretrain's convention).
    """
    model = _CONFIG_FAMILY[variant.family]
    if variant.budget is None:
        return model
    stem = f'{variant.name.split("_")[0]}-{model}'
    if variant.backbone.get('layout') == 'release':
        stem += '-release'
    return stem


def find_configs(variant: PaperVariant, config_dir: str = CONFIG_DIR) -> List[str]:
    """The ImageNet configs of ``variant`` in ``config_dir`` (sorted paths; may be empty)."""
    import glob
    pattern = os.path.join(config_dir, f'{config_stem(variant)}_*in1k.py')
    return sorted(os.path.normpath(p) for p in glob.glob(pattern))


def target_from_variant(name: str) -> Target:
    variant = resolve_variant(name)
    return Target(f'variant {variant.name}', variant.model_cfg(), variant=variant)


def target_from_config(path: str) -> Target:
    """The model of an mmpretrain config file."""
    from mmengine.config import Config
    if not os.path.isfile(path):
        raise OfficialCheckpointError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if 'model' not in cfg:
        raise OfficialCheckpointError(f'config {path} has no model')
    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    if '.' not in str(model_cfg.get('type', '')):
        # Unprefixed types resolve in the config's default scope (mmpretrain for our configs).
        scope = cfg.get('default_scope', 'mmpretrain')
        model_cfg['type'] = f'{scope}.{model_cfg["type"]}'
    name = os.path.splitext(os.path.basename(path))[0]
    return Target(f'config {name}', model_cfg, config_path=path)


# --------------------------------------------------------------------------- conversion
@dataclass
class Conversion:
    """A converted checkpoint and what it was found to be."""

    state_dict: 'OrderedDict[str, torch.Tensor]'
    family: Family
    variant: Optional[PaperVariant]  # the detected variant (None if only a config fit)
    target: Target

    @property
    def checkpoint_name(self) -> str:
        return variant_label(self.variant) if self.variant else f'a {self.family.name}'


def convert_state_dict(state_dict: Mapping[str, torch.Tensor],
                       variant: Optional[str] = None,
                       config: Optional[str] = None) -> Conversion:
    """Convert a reference state dict for the detected, or the requested, model.

    Args:
        state_dict (Mapping): The reference state dict.
        variant (str, optional): A paper variant name (``'kw1x_resnet50'``) or released name
            the checkpoint must be. Defaults to None (detect).
        config (str, optional): An mmpretrain config file whose model the checkpoint must fit.
            Defaults to None.

    Returns:
        Conversion: The converted state dict in the model's key order.

    Raises:
        OfficialCheckpointError: If the keys cannot be converted, fit no variant, or do not
            fit the requested model.
    """
    if variant is not None and config is not None:
        raise OfficialCheckpointError('give either a variant or a config, not both')
    family = detect_family(state_dict)
    converted = convert_keys(state_dict, family)
    if variant is None and config is None:
        detection = detect_variant(state_dict, converted)
        if len(detection.fits) != 1:
            raise _no_fit_error(detection)
        target = target_from_variant(detection.fits[0].name)
        return Conversion(_ordered(converted, target.shapes()), family, detection.fits[0],
                          target)
    target = target_from_variant(variant) if variant is not None else target_from_config(config)
    shapes = target.shapes()
    mismatch = compare(converted, shapes)
    detection = detect_variant(state_dict, converted)
    detected = detection.fits[0] if len(detection.fits) == 1 else None
    if mismatch and target.variant is not None and target.variant.family != family.name:
        raise OfficialCheckpointError(
            f'checkpoint is {_checkpoint_name(detection)} (a {family.name}) but '
            f'{target.label} is a {target.variant.family}\n  {describe(mismatch)}')
    if mismatch:
        have, want = headline(mismatch)
        raise OfficialCheckpointError(
            f'checkpoint is {_checkpoint_name(detection)} ({have}) but {target.label} expects '
            f'{want}\n  {describe(mismatch)}')
    return Conversion(_ordered(converted, shapes), family, detected, target)


def _ordered(converted: Mapping[str, torch.Tensor], shapes: Shapes) -> 'OrderedDict':
    # In the model's own order; each tensor contiguous and owning its storage, so the saved
    # file holds exactly these tensors.
    out = OrderedDict()
    for key in shapes:
        tensor = converted[key].detach()
        if not tensor.is_contiguous() or tensor.untyped_storage().nbytes() != \
                tensor.numel() * tensor.element_size():
            tensor = tensor.contiguous().clone()
        out[key] = tensor
    return out


def convert_checkpoint(src: str, dst: str, variant: Optional[str] = None,
                       config: Optional[str] = None, key: str = 'auto') -> Conversion:
    """Convert the reference checkpoint file ``src`` into the kw_mm checkpoint ``dst``.

    ``dst`` holds ``{'state_dict': ..., 'meta': {...}}``, plain tensors and strings only, so it
    loads with ``torch.load(dst, weights_only=True)`` and with mmengine's ``load_checkpoint``.
    """
    from kw_mm.version import __version__
    state_dict, where = load_official_checkpoint(src, key=key)
    result = convert_state_dict(state_dict, variant=variant, config=config)
    meta = {
        'converted_from': os.path.basename(src),
        'source_state_dict': where,
        'official_model': result.checkpoint_name,
        'target': result.target.label,
        'converter': f'kw_mm {__version__} tools/model_converters/kw_official_to_mmpretrain.py',
        'temperature': 'not stored; a converted model runs at t = 0 like the reference',
    }
    if result.variant is not None:
        meta['paper_variant'] = result.variant.name
    if result.target.config_path:
        meta['config'] = result.target.config_path
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': result.state_dict, 'meta': meta}, dst)
    return result
