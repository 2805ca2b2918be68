"""State-dict keys of the reference (KW) ConvNeXt-Tiny -> mmpretrain ``ImageClassifier`` keys.

The reference classifiers (OSVAI/KernelWarehouse ``kw_convnext_tiny`` and the plain
``convnext_tiny``, both as in facebookresearch/ConvNeXt) and mmpretrain's ``ConvNeXt`` /
:class:`~kw_mm.models.backbones.KWConvNeXt` differ in these names:

================================  ==============================================
reference                         mmpretrain (``ImageClassifier``)
================================  ==============================================
``stages.i.j.dwconv.*``           ``backbone.stages.i.j.depthwise_conv.*``
``stages.i.j.pwconv1.*``          ``backbone.stages.i.j.pointwise_conv1.*``
``stages.i.j.pwconv2.*``          ``backbone.stages.i.j.pointwise_conv2.*``
``norm.*`` (after pooling)        ``backbone.norm3.*`` (``gap_before_final_norm``)
``head.*``                        ``head.fc.*``
everything else                   ``backbone.`` + the same name
================================  ==============================================

One tensor changes shape: the KW release stores the layer scale ``stages.i.j.gamma`` as
``[1, C, 1, 1]``; mmpretrain's is ``[C]`` (:func:`convert_tensor` flattens it). The plain
release already stores ``[C]``, and its point-wise ``Linear`` weights ``[out, in]`` fit
mmpretrain's ``linear_pw_conv=True`` as they are. KW attentions (``.attention.fc1/norm1/fc2``)
and the cells (``warehouse_manager.weights.<i>``, ``[n, co, ci, 1, 1]``) keep names and shapes.
"""
import re

import torch

_RENAMES = {'dwconv': 'depthwise_conv', 'pwconv1': 'pointwise_conv1',
            'pwconv2': 'pointwise_conv2'}
_BLOCK = re.compile(r'^stages\.(\d+)\.(\d+)\.(?:(dwconv|pwconv1|pwconv2|norm)\..+|gamma)$')
_SAME = re.compile(r'^(warehouse_manager\.weights\.\d+|downsample_layers\.\d+\.\d+\..+)$')
_FINAL_NORM = re.compile(r'^norm\.(weight|bias)$')
_HEAD = re.compile(r'^head\.(weight|bias)$')
#: The final norm of the reference follows the last (fourth) stage.
FINAL_STAGE = 3


def to_mmpretrain_key(key: str) -> str:
    """The ``ImageClassifier`` key (KWConvNeXt or ConvNeXt backbone) for a reference key.

    Args:
        key (str): A key of a reference ConvNeXt state dict, e.g.
            ``'stages.2.4.pwconv1.attention.fc2.weight'`` or ``'head.bias'``.

    Returns:
        str: e.g. ``'backbone.stages.2.4.pointwise_conv1.attention.fc2.weight'`` or
        ``'head.fc.bias'``.

    Raises:
        KeyError: If ``key`` is not a key of a reference ConvNeXt.

    Example:
        >>> to_mmpretrain_key('stages.0.1.dwconv.bias')
        'backbone.stages.0.1.depthwise_conv.bias'
        >>> to_mmpretrain_key('norm.weight')
        'backbone.norm3.weight'
        >>> to_mmpretrain_key('head.weight')
        'head.fc.weight'
    """
    match = _BLOCK.match(key)
    if match:
        layer = match.group(3)
        if layer in _RENAMES:
            prefix = f'stages.{match.group(1)}.{match.group(2)}.'
            key = prefix + _RENAMES[layer] + key[len(prefix) + len(layer):]
        return 'backbone.' + key
    if _SAME.match(key):
        return 'backbone.' + key
    if _FINAL_NORM.match(key):
        return f'backbone.norm{FINAL_STAGE}.' + key.split('.', 1)[1]
    if _HEAD.match(key):
        return 'head.fc.' + key.split('.', 1)[1]
    raise KeyError(f'{key!r} is not a key of a reference ConvNeXt state dict (expected '
                   "'warehouse_manager.weights.<i>', 'downsample_layers.*', 'stages.<i>.<j>."
                   "{dwconv,pwconv1,pwconv2,norm,gamma}*', 'norm.weight'/'norm.bias' or "
                   "'head.weight'/'head.bias')")


def convert_tensor(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """The tensor for ``to_mmpretrain_key(key)``: the layer scale ``gamma`` is flattened
    (``[1, C, 1, 1]`` -> ``[C]``); every other tensor is returned unchanged.

    Args:
        key (str): The reference key of ``tensor``.
        tensor (torch.Tensor): The reference tensor.

    Returns:
        torch.Tensor: The tensor in mmpretrain's shape.
    """
    if key.endswith('.gamma'):
        return tensor.reshape(-1)
    return tensor
