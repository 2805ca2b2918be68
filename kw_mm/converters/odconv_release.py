"""The ODConv release's ImageNet checkpoints (OSVAI/ODConv) -> kw_mm / mmpretrain keys.

The release's models use torchvision's names; the ODConv layers' own keys (``weight``
``[K, Cout, Cin/g, k, k]``, ``attention.fc``, ``attention.bn``, ``attention.{channel, filter,
spatial, kernel}_fc``) are those of :class:`kw_mm.cnn.dynamic.ODConv2d`, so only the module
paths change: ResNet ``X`` -> ``backbone.X`` and ``fc`` -> ``head.fc``; MobileNetV2
``features.0`` -> ``backbone.conv1``, ``features.i`` (i = 1..17) -> ``backbone.layer{l}.{b}``,
``features.18`` -> ``backbone.conv2``, ``classifier.1`` -> ``head.fc``. The architecture
(ResNet depth or MobileNetV2 width) and K are detected from the tensors; the target config's
model must then take every tensor with its shape, or the conversion is refused with the same
report as the KW release's converter.

Example:
    >>> from kw_mm.converters.odconv_release import convert_odconv_checkpoint
    >>> result = convert_odconv_checkpoint('od_resnet50_4x.pth', 'odconv4x-resnet50_in1k.pth')
    >>> result.config
    'configs/odconv4x-resnet50_8xb512-300e_in1k.py'
"""
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch

from kw_mm.apis import get_config_path, model_config
from kw_mm.utils.checkpoint import compare_state_dict, mismatch_message
from .kw_release.convert import OfficialCheckpointError, load_official_checkpoint, model_shapes

#: (architecture, K) -> the kw_mm model of that released model.
ODCONV_MODELS: Dict[Tuple[str, int], str] = {
    ('resnet18', 4): 'odconv4x-resnet18_8xb32_in1k',
    ('resnet50', 4): 'odconv4x-resnet50_8xb512-300e_in1k',
    ('mobilenet-v2', 4): 'odconv4x-mobilenet-v2_8xb32-150e_in1k',
    ('mobilenet-v2-w0.5', 4): 'odconv4x-mobilenet-v2-w0.5_8xb32-150e_in1k',
}
#: Blocks of the torchvision MobileNetV2 channel groups (``features.1`` .. ``features.17``).
MOBILENET_V2_BLOCKS = (1, 2, 3, 4, 3, 3, 1)
#: ``features.0.0.weight`` output channels -> width.
MOBILENET_V2_WIDTHS = {32: 'mobilenet-v2', 16: 'mobilenet-v2-w0.5'}


@dataclass
class ODConvConversion:
    """A converted ODConv checkpoint and what it was detected as."""

    state_dict: 'OrderedDict[str, torch.Tensor]'
    arch: str
    num_kernels: int
    config: str


def detect_odconv(state_dict: Mapping[str, torch.Tensor]) -> Tuple[str, int]:
    """``(architecture, K)`` of an ODConv release state dict.

    Raises:
        OfficialCheckpointError: If it is not an ODConv ResNet or MobileNetV2 state dict.
    """
    if not any(k.endswith('.attention.channel_fc.weight') for k in state_dict):
        raise OfficialCheckpointError(
            'not an ODConv release checkpoint (no ODConv attention keys such as '
            f'"layer1.0.conv1.attention.channel_fc.weight"); first keys: {list(state_dict)[:3]}')
    if 'layer1.0.conv1.weight' in state_dict:
        bottleneck = 'layer1.0.conv3.weight' in state_dict
        blocks = len({k.split('.')[1] for k in state_dict if k.startswith('layer3.')})
        depth = {(False, 2): 18, (False, 6): 34, (True, 6): 50, (True, 23): 101,
                 (True, 36): 152}.get((bottleneck, blocks))
        if depth is None:
            raise OfficialCheckpointError(f'an ODConv ResNet with {blocks} blocks in layer3 '
                                          f'(bottleneck: {bottleneck}) is no torchvision depth')
        return f'resnet{depth}', state_dict['layer1.0.conv1.weight'].shape[0]
    if 'features.0.0.weight' in state_dict:
        stem = state_dict['features.0.0.weight'].shape[0]
        if stem not in MOBILENET_V2_WIDTHS:
            raise OfficialCheckpointError(
                f'ODConv MobileNetV2 with a {stem}-channel stem: kw_mm builds the widths '
                f'1.0 and 0.5 (stems {sorted(MOBILENET_V2_WIDTHS)})')
        return MOBILENET_V2_WIDTHS[stem], state_dict['features.1.conv.0.0.weight'].shape[0]
    raise OfficialCheckpointError('an ODConv checkpoint of neither a ResNet nor a MobileNetV2')


def _mobilenet_v2_block(index: int) -> str:
    """``features.{index}`` (1..17) -> ``layer{l}.{b}``."""
    first = 1
    for layer, blocks in enumerate(MOBILENET_V2_BLOCKS, 1):
        if index < first + blocks:
            return f'layer{layer}.{index - first}'
        first += blocks
    raise OfficialCheckpointError(f'features.{index} is no MobileNetV2 block')


def odconv_key(key: str, arch: str) -> str:
    """The kw_mm key of a release key."""
    if arch.startswith('resnet'):
        return 'head.' + key if key.startswith('fc.') else 'backbone.' + key
    if key.startswith('classifier.1.'):
        return 'head.fc.' + key[len('classifier.1.'):]
    match = re.match(r'features\.(\d+)\.(.*)$', key)
    if match is None:
        raise OfficialCheckpointError(f'unexpected MobileNetV2 key {key!r}')
    index, rest = int(match.group(1)), match.group(2)
    if index in (0, 18):  # conv-BN-ReLU6: .0 conv, .1 BN
        unit, rest = rest.split('.', 1)
        return f"backbone.{'conv1' if index == 0 else 'conv2'}." + \
            ('conv.' if unit == '0' else 'bn.') + rest
    block = _mobilenet_v2_block(index)
    _, j, rest = rest.split('.', 2)  # conv.{j}.{...}
    units = 2 if index == 1 else 3
    j = int(j)
    if rest.split('.', 1)[0] in ('0', '1'):  # a conv-BN-ReLU6 unit
        sub, rest = rest.split('.', 1)
        return f"backbone.{block}.conv.{j}.{'conv' if sub == '0' else 'bn'}.{rest}"
    if j == units:  # the BN after the projection ODConv
        return f'backbone.{block}.conv.{j - 1}.bn.{rest}'
    return f'backbone.{block}.conv.{j}.conv.{rest}'


def convert_odconv_state_dict(state_dict: Mapping[str, torch.Tensor],
                              config: Optional[str] = None) -> ODConvConversion:
    """Convert an ODConv release state dict for its kw_mm model (or ``config``'s).

    Raises:
        OfficialCheckpointError: If the checkpoint is no ODConv release model kw_mm has, or
            does not fit the model (every difference is listed).
    """
    arch, num_kernels = detect_odconv(state_dict)
    name = f'ODConv {num_kernels}x {arch}'
    if config is None:
        if (arch, num_kernels) not in ODCONV_MODELS:
            raise OfficialCheckpointError(
                f'checkpoint is {name}; kw_mm has configs for '
                f'{sorted(f"ODConv {k}x {a}" for a, k in ODCONV_MODELS)}: give --config')
        config = get_config_path(ODCONV_MODELS[(arch, num_kernels)])
    converted = OrderedDict((odconv_key(k, arch), v) for k, v in state_dict.items())
    shapes = model_shapes(model_config(config))
    mismatch = compare_state_dict(converted, shapes)
    if mismatch:
        raise OfficialCheckpointError(mismatch_message(mismatch, f'checkpoint is {name}',
                                                       os.path.basename(config)))
    ordered = OrderedDict((k, converted[k].detach().contiguous().clone()) for k in shapes)
    return ODConvConversion(ordered, arch, num_kernels, config)


def convert_odconv_checkpoint(src: str, dst: str, config: Optional[str] = None,
                              key: str = 'auto') -> ODConvConversion:
    """Convert the ODConv release checkpoint file ``src`` into the kw_mm checkpoint ``dst``
    (``{'state_dict': ..., 'meta': {...}}``, loadable with ``weights_only=True``)."""
    state_dict, where = load_official_checkpoint(src, key=key)
    result = convert_odconv_state_dict(state_dict, config)
    meta = dict(converted_from=os.path.basename(src), source_state_dict=where,
                official_model=f'ODConv {result.num_kernels}x {result.arch}',
                target=os.path.basename(result.config),
                temperature='not stored; ODConv evaluates and fine-tunes at t = 1')
    torch.save(dict(state_dict=result.state_dict, meta=meta), dst)
    return result
