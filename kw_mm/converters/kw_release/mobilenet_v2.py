"""State-dict keys of the reference (KW) MobileNetV2s -> mmpretrain ``ImageClassifier`` keys.

The reference classifiers (OSVAI/KernelWarehouse ``kw_mobilenetv2_*``, ``kw1d2x_mobilenetv2_*``
and the torchvision-style ``mobilenetv2_*`` baselines) keep their layers in one ``features``
sequence; mmpretrain's ``MobileNetV2`` and :class:`~kw_mm.models.backbones.KWMobileNetV2` split
it by channel group and wrap every conv + norm in a ConvModule (``conv``, ``bn``):

=======================================  ==================================================
reference                                mmpretrain (``ImageClassifier``)
=======================================  ==================================================
``features.0.{0,1}.*``                   ``backbone.conv1.{conv,bn}.*``
``features.{i}.conv.*`` (i = 1..17)      ``backbone.layer{g}.{j}.conv.*`` (below)
``features.18.{0,1}.*``                  ``backbone.conv2.{conv,bn}.*``
``classifier.weight`` (KW 1x, 4x),       ``head.fc.*``
``classifier.1.*`` (baseline, KW 1/2x)
``warehouse_manager.weights.<i>``        ``backbone.warehouse_manager.weights.<i>``; the
                                         KW 1/2x classifier's warehouse (the last one)
                                         ``head.warehouse_manager.weights.0``
=======================================  ==================================================

Inside a block, the reference's ``conv.0.0 / conv.0.1 / conv.1.0 / conv.1.1 / conv.2 / conv.3``
(expansion conv and norm, depth-wise conv and norm, projection conv and norm) become
``conv.0.conv / conv.0.bn / conv.1.conv / conv.1.bn / conv.2.conv / conv.2.bn``; the first block
has no expansion, so its ``conv.0.{0,1} / conv.1 / conv.2`` become ``conv.0.{conv,bn} /
conv.1.conv / conv.1.bn``. KW attentions (``.attention.fc1/norm1/fc2``) keep their names, and
no tensor changes shape.
"""
import re
from typing import Iterable, List, Optional, Tuple

#: Blocks per channel group of MobileNetV2 (``layer1`` .. ``layer7``).
BLOCKS_PER_LAYER = (1, 2, 3, 4, 3, 3, 1)
#: ``features`` index of the last 1x1 conv (``conv2``).
LAST_CONV = 1 + sum(BLOCKS_PER_LAYER)

_STEM_OR_LAST = re.compile(r'^features\.(\d+)\.([01])\.(.+)$')
_BLOCK = re.compile(r'^features\.(\d+)\.conv\.(\d)(?:\.([01]))?\.(.+)$')
_WAREHOUSE = re.compile(r'^warehouse_manager\.weights\.(\d+)$')
_CLASSIFIER = re.compile(r'^classifier\.(?:1\.)?(weight|bias)$')
_KW_CLASSIFIER = re.compile(r'^classifier\.1\.conv\.(.+)$')
_CONV_MODULE = {'0': 'conv', '1': 'bn'}
# Block sub-module -> (ConvModule index, part) without and with an expansion conv.
_BLOCK_PARTS = {
    False: {('0', '0'): ('0', 'conv'), ('0', '1'): ('0', 'bn'), ('1', None): ('1', 'conv'),
            ('2', None): ('1', 'bn')},
    True: {('0', '0'): ('0', 'conv'), ('0', '1'): ('0', 'bn'), ('1', '0'): ('1', 'conv'),
           ('1', '1'): ('1', 'bn'), ('2', None): ('2', 'conv'), ('3', None): ('2', 'bn')},
}


def _block_position(index: int) -> Tuple[int, int]:
    """``features.<index>`` (1..17) -> (layer number 1..7, block index in the layer)."""
    first = 1
    for layer, num_blocks in enumerate(BLOCKS_PER_LAYER, start=1):
        if index < first + num_blocks:
            return layer, index - first
        first += num_blocks
    raise KeyError(index)


def _unknown(key: str) -> KeyError:
    return KeyError(f'{key!r} is not a key of a reference MobileNetV2 state dict (expected '
                    "'warehouse_manager.weights.<i>', 'features.<0..18>.*', 'classifier.weight'"
                    "/'classifier.bias', 'classifier.1.*' or 'classifier.1.conv.*')")


def to_mmpretrain_key(key: str, classifier_warehouse: Optional[int] = None) -> str:
    """The ``ImageClassifier`` key (KWMobileNetV2 or MobileNetV2 backbone) for a reference key.

    Args:
        key (str): A key of a reference MobileNetV2 state dict, e.g.
            ``'features.2.conv.1.0.attention.fc1.weight'`` or ``'classifier.1.conv.bias'``.
        classifier_warehouse (int, optional): Index of the reference warehouse that holds the
            KW classifier's cells (9 for both released KW 1/2x models; see
            :func:`find_classifier_warehouse`). It maps to the head's own manager. None: every
            warehouse belongs to the backbone (KW 1x and 4x). Defaults to None.

    Returns:
        str: e.g. ``'backbone.layer2.0.conv.1.conv.attention.fc1.weight'`` or
        ``'head.fc.conv.bias'``.

    Raises:
        KeyError: If ``key`` is not a key of a reference MobileNetV2.

    Example:
        >>> to_mmpretrain_key('features.1.conv.2.running_var')
        'backbone.layer1.0.conv.1.bn.running_var'
        >>> to_mmpretrain_key('features.18.0.attention.fc2.bias')
        'backbone.conv2.conv.attention.fc2.bias'
        >>> to_mmpretrain_key('warehouse_manager.weights.9', classifier_warehouse=9)
        'head.warehouse_manager.weights.0'
    """
    match = _WAREHOUSE.match(key)
    if match:
        if classifier_warehouse is not None and int(match.group(1)) == classifier_warehouse:
            return 'head.warehouse_manager.weights.0'
        return 'backbone.' + key
    match = _KW_CLASSIFIER.match(key)
    if match:
        return 'head.fc.conv.' + match.group(1)
    match = _CLASSIFIER.match(key)
    if match:
        return 'head.fc.' + match.group(1)
    match = _STEM_OR_LAST.match(key)
    if match and int(match.group(1)) in (0, LAST_CONV):
        module = 'conv1' if match.group(1) == '0' else 'conv2'
        return f'backbone.{module}.{_CONV_MODULE[match.group(2)]}.{match.group(3)}'
    match = _BLOCK.match(key)
    if match and 0 < int(match.group(1)) < LAST_CONV:
        layer, block = _block_position(int(match.group(1)))
        # Only the first channel group (expand ratio 1) has no expansion conv.
        parts = _BLOCK_PARTS[layer != 1].get((match.group(2), match.group(3)))
        if parts is not None:
            return (f'backbone.layer{layer}.{block}.conv.{parts[0]}.{parts[1]}.'
                    f'{match.group(4)}')
    raise _unknown(key)


def find_classifier_warehouse(keys: Iterable[str]) -> Optional[int]:
    """Index of the KW classifier's warehouse in a reference state dict, or None.

    The KW 1/2x models end with a KW linear classifier (``classifier.1.conv.*``); it is the
    last layer the reference manager allocates, so its warehouse is the last one.
    """
    keys = list(keys)
    if not any(_KW_CLASSIFIER.match(k) for k in keys):
        return None
    indices = [int(m.group(1)) for m in map(_WAREHOUSE.match, keys) if m]
    if not indices:
        raise KeyError('the state dict has a KW classifier (classifier.1.conv.*) but no '
                       "'warehouse_manager.weights.<i>'")
    return max(indices)


def mmpretrain_keys(keys: Iterable[str]) -> List[str]:
    """:func:`to_mmpretrain_key` of every key name, the KW classifier's warehouse found among
    them (e.g. for the layout data of the tests; whole state dicts go through
    :func:`kw_mm.converters.kw_release.convert_keys`)."""
    keys = list(keys)
    classifier = find_classifier_warehouse(keys)
    return [to_mmpretrain_key(k, classifier) for k in keys]
