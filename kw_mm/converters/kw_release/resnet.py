"""State-dict keys of the reference KW ResNets (and their plain baselines) -> kw_mm keys.

The reference classifiers (OSVAI/KernelWarehouse ``kw_resnet18`` ... and the torchvision-style
``resnet18`` / ``resnet50`` baselines) name their modules as torchvision does; ``KWResNet`` and
``mmpretrain.ResNet`` use the same names inside ``backbone.``, and the classifier ``fc`` becomes
``mmpretrain.LinearClsHead``'s ``head.fc``. KW attentions (``.attention.fc1/norm1/fc2/fc3``,
``.attention.basis_bias``) and the cells (``warehouse_manager.weights.<i>``) keep their names.
"""
import re

#: Top-level modules of the reference ResNets that belong to the backbone.
_BACKBONE = re.compile(
    r'^(warehouse_manager\.weights\.\d+|(conv1|bn1)\.\w+|layer[1-4]\.\d+\..+)$')
_CLASSIFIER = re.compile(r'^fc\.(weight|bias)$')


def to_mmpretrain_key(key: str) -> str:
    """The key of an mmpretrain ``ImageClassifier`` (KWResNet or ResNet backbone) for ``key``.

    Args:
        key (str): A key of a reference ResNet state dict, e.g.
            ``'layer1.0.conv1.attention.fc2.weight'`` or ``'fc.bias'``.

    Returns:
        str: e.g. ``'backbone.layer1.0.conv1.attention.fc2.weight'`` or ``'head.fc.bias'``.

    Raises:
        KeyError: If ``key`` is not a key of a reference ResNet.

    Example:
        >>> to_mmpretrain_key('warehouse_manager.weights.0')
        'backbone.warehouse_manager.weights.0'
        >>> to_mmpretrain_key('fc.weight')
        'head.fc.weight'
    """
    if _BACKBONE.match(key):
        return 'backbone.' + key
    if _CLASSIFIER.match(key):
        return 'head.' + key
    raise KeyError(f'{key!r} is not a key of a reference ResNet state dict (expected '
                   "'warehouse_manager.weights.<i>', 'conv1.*', 'bn1.*', 'layer<1-4>.<j>.*' "
                   "or 'fc.weight'/'fc.bias')")
