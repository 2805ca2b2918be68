"""Converting checkpoints of the reference KernelWarehouse release to kw_mm / mmpretrain.

A reference checkpoint (OSVAI/KernelWarehouse: a state dict, or a dict holding it under
``'model'``, ``'model_ema'`` or ``'state_dict'``) becomes a state-dict-only checkpoint
``{'state_dict': ..., 'meta': {...}}`` for an mmpretrain ``ImageClassifier`` built from
:mod:`the model index <kw_mm.apis.model_index>` or from a config file.

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
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from kw_mm.apis import Variant, build_model, get_model_index, model_config
from kw_mm.utils.checkpoint import (Mismatch, Shapes, compare_state_dict, describe, first_keys,
                                    load_file, mismatch_message, state_dict_shapes,
                                    unwrap_state_dict)
from . import convnext, mobilenet_v2, resnet

#: Where a reference training checkpoint keeps the weights, in the order they are looked for.
WRAPPER_KEYS = ('model', 'model_ema', 'state_dict')


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
    return unwrap_official(load_file(path), key=key, source=path)


def unwrap_official(obj: object, key: str = 'auto',
                    source: str = 'checkpoint') -> Tuple[Dict[str, torch.Tensor], str]:
    """The state dict inside a loaded reference checkpoint (see
    :func:`load_official_checkpoint`), refused with :class:`OfficialCheckpointError`."""
    try:
        return unwrap_state_dict(obj, key=key, source=source, keys=WRAPPER_KEYS)
    except ValueError as err:
        raise OfficialCheckpointError(str(err)) from None


# --------------------------------------------------------------------------- family
@dataclass(frozen=True)
class Family:
    """What the key patterns say about a reference checkpoint."""

    name: str  # the family of the model index (Variant.family)
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
                        f'{first_keys(unknown)}')
    if collisions:
        problems.append('keys that map to the same model key: ' + '; '.join(collisions[:5]))
    if problems:
        raise OfficialCheckpointError('cannot convert the checkpoint: ' + '; '.join(problems))
    return out


# --------------------------------------------------------------------------- candidate models
def model_shapes(model_cfg: dict) -> Shapes:
    """Key -> shape of the state dict of the model ``model_cfg`` (built on the meta device)."""
    try:
        model = build_model(model_cfg, device='meta')
    except (RuntimeError, NotImplementedError):
        # A constructor that needs real numbers (e.g. .item() of a parameter): build for real.
        model = build_model(model_cfg)
    return state_dict_shapes(model)


_SHAPE_CACHE: Dict[str, Shapes] = {}


def variant_shapes(variant: Variant) -> Shapes:
    """:func:`model_shapes` of a paper variant (1000 classes), cached per process."""
    if variant.name not in _SHAPE_CACHE:
        _SHAPE_CACHE[variant.name] = model_shapes(variant.model_cfg())
    return _SHAPE_CACHE[variant.name]


# --------------------------------------------------------------------------- detection
@dataclass
class Detection:
    """Which candidate variants of a family fit a converted checkpoint."""

    family: Family
    fits: List[Variant]
    closest: List[Tuple[Variant, Mismatch]]  # every candidate, best first


def candidates(family: Family) -> List[Variant]:
    """Paper variants of the family, KW ones for a KW checkpoint, the baseline otherwise."""
    return [v for v in get_model_index().variants.values()
            if v.family == family.name and v.is_kw == family.kw]


def detect_variant(state_dict: Mapping[str, torch.Tensor],
                   converted: Optional[Mapping[str, torch.Tensor]] = None) -> Detection:
    """The paper variants whose models every converted key and shape fits.

    Works on shapes only, so meta tensors (no data) can be passed.
    """
    family = detect_family(state_dict)
    if converted is None:
        converted = convert_keys(state_dict, family)
    results = [(v, compare_state_dict(converted, variant_shapes(v))) for v in candidates(family)]
    results.sort(key=lambda r: r[1].size)
    return Detection(family, [v for v, m in results if not m], results)


def _checkpoint_name(detection: Detection) -> str:
    if len(detection.fits) == 1:
        return detection.fits[0].label
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
    tried = ', '.join(v.label for v, _ in detection.closest)
    return OfficialCheckpointError(
        f'the checkpoint is {_checkpoint_name(detection)} that fits no released variant '
        f'(tried {tried}); closest is {variant.label}: '
        + mismatch_message(mismatch, 'the checkpoint has', variant.label))


# --------------------------------------------------------------------------- the target model
@dataclass
class Target:
    """The model a checkpoint is converted for."""

    label: str  # e.g. "variant kw1x_resnet50" or "config kw1x-resnet50_8xb512-300e_in1k"
    model_cfg: dict
    variant: Optional[Variant] = None
    config_path: Optional[str] = None

    def shapes(self) -> Shapes:
        if self.variant is not None:
            return variant_shapes(self.variant)
        return model_shapes(self.model_cfg)


def resolve_variant(name: str) -> Variant:
    """A paper variant by kw_mm name or by the reference release's name."""
    try:
        return get_model_index().get_variant(name)
    except KeyError as err:
        raise OfficialCheckpointError(err.args[0]) from None


def target_from_variant(name: str) -> Target:
    variant = resolve_variant(name)
    return Target(f'variant {variant.name}', variant.model_cfg(), variant=variant)


def target_from_config(path: str) -> Target:
    """The model of an mmpretrain config file."""
    if not os.path.isfile(path):
        raise OfficialCheckpointError(f'config file not found: {path}')
    try:
        model_cfg = model_config(path)
    except ValueError as err:
        raise OfficialCheckpointError(str(err)) from None
    name = os.path.splitext(os.path.basename(path))[0]
    return Target(f'config {name}', model_cfg, config_path=path)


# --------------------------------------------------------------------------- conversion
@dataclass
class Conversion:
    """A converted checkpoint and what it was found to be."""

    state_dict: 'OrderedDict[str, torch.Tensor]'
    family: Family
    variant: Optional[Variant]  # the detected variant (None if only a config fit)
    target: Target

    @property
    def checkpoint_name(self) -> str:
        return self.variant.label if self.variant else f'a {self.family.name}'


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
    mismatch = compare_state_dict(converted, shapes)
    detection = detect_variant(state_dict, converted)
    detected = detection.fits[0] if len(detection.fits) == 1 else None
    if mismatch and target.variant is not None and target.variant.family != family.name:
        raise OfficialCheckpointError(
            f'checkpoint is {_checkpoint_name(detection)} (a {family.name}) but '
            f'{target.label} is a {target.variant.family}\n  {describe(mismatch)}')
    if mismatch:
        raise OfficialCheckpointError(mismatch_message(
            mismatch, f'checkpoint is {_checkpoint_name(detection)}', target.label))
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
