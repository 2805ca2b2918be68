"""Export-time folding of the evaluation BatchNorm (and the activation after it) into the KW
layers before them.

A plain model's ``Conv`` + BatchNorm + activation is one fused ``Conv`` in ONNX Runtime: the
runtime folds the BatchNorm into the constant weight. A KW layer's weight is computed per
sample, so its BatchNorm and activation stayed separate nodes that each read and write the
whole feature map. :func:`folded_norms` folds them into the layer for the export only: the
BatchNorm becomes a factor on the layer's assembled kernels and a bias, the activation follows
the layer's ``Conv`` directly (:class:`~kw_mm.cnn.export.Epilogue`), and both modules are
replaced by ``nn.Identity`` until the block ends. Eager training and evaluation never see it.

Which modules follow which is read from one forward pass of the example input (hooks on every
module; a BatchNorm follows a KW layer when its input *is* the layer's output tensor, an
activation follows the BatchNorm when its input is the BatchNorm's output). A layer is folded
only where that is cheaper than the BatchNorm it removes and leaves the graph the same
function:

* the KW layer (not KW*) and the BatchNorm each run once, the BatchNorm evaluates with running
  statistics over the layer's output channels;
* the layer's kernel is no larger than its output per sample (scaling the kernels of a late
  ResNet or MobileNetV2 layer would cost more than the BatchNorm it saves); a folded point-wise
  layer runs as a 1x1 ``Conv`` instead of the batched MatMul, so its bias and activation fuse;
* the activation is an element-wise module (:data:`FUSABLE_ACTIVATIONS`) called once.
"""
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn

from kw_mm.cnn import KWConvNd
from kw_mm.cnn.attention import AttentionBatchNorm1d
from kw_mm.cnn.export import Epilogue
from kw_mm.cnn.kw_star import KWStarAttention

#: Element-wise activation modules that may move into a KW layer's export formulation (ONNX
#: Runtime fuses ``Relu``, ``Clip``, ``Sigmoid``, ``Tanh``, ``LeakyRelu`` and ``HardSigmoid``
#: into a ``Conv``; the others at least follow it directly).
FUSABLE_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
                       nn.Hardsigmoid, nn.SiLU, nn.Hardswish)


@dataclass
class Fold:
    """One KW layer with the BatchNorm (and activation) folded into it."""

    layer: str
    norm: str
    act: Optional[str] = None


def norm_factors(norm: nn.modules.batchnorm._BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``norm(x) == x * scale + shift`` per channel (evaluation)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale.detach(), shift.detach()


def _is_foldable_norm(module: nn.Module) -> bool:
    return (isinstance(module, nn.modules.batchnorm._BatchNorm)
            and not isinstance(module, AttentionBatchNorm1d) and not module.training
            and module.running_mean is not None and module.running_var is not None)


def _is_foldable_layer(module: nn.Module) -> bool:
    return (isinstance(module, KWConvNd) and module.geometry is not None
            and not isinstance(getattr(module, 'attention', None), KWStarAttention))


def find_folds(target: nn.Module, example: torch.Tensor) -> List[Fold]:
    """The KW layer / BatchNorm / activation triples of ``target`` that :func:`folded_norms`
    folds (see the module docstring), read from one forward pass of ``example``."""
    names = {module: name for name, module in target.named_modules()}
    calls: Dict[nn.Module, int] = {}
    outputs: Dict[nn.Module, torch.Tensor] = {}  # module -> its last output
    inputs: Dict[nn.Module, torch.Tensor] = {}  # module -> its last input
    watched = [m for m in names if _is_foldable_layer(m) or _is_foldable_norm(m)
               or isinstance(m, FUSABLE_ACTIVATIONS)]

    def pre_hook(module, args):
        calls[module] = calls.get(module, 0) + 1
        if args and isinstance(args[0], torch.Tensor):
            inputs[module] = args[0]

    def hook(module, args, output):
        if isinstance(output, torch.Tensor):
            outputs[module] = output

    handles = [h for m in watched for h in (m.register_forward_pre_hook(pre_hook),
                                            m.register_forward_hook(hook))]
    try:
        with torch.no_grad():
            target(example)
    finally:
        for handle in handles:
            handle.remove()
    by_output = {id(out): m for m, out in outputs.items() if _is_foldable_layer(m)}
    folds = []
    for norm in watched:
        if not _is_foldable_norm(norm) or calls.get(norm) != 1 or norm not in inputs:
            continue
        layer = by_output.get(id(inputs[norm]))
        if (layer is None or outputs[layer] is not inputs[norm] or calls.get(layer) != 1
                or norm.num_features != layer.out_channels):
            continue
        out = outputs[layer]
        if math.prod(layer.weight_shape) > math.prod(out.shape[1:]):
            continue  # scaling the kernels would cost more than the BatchNorm
        act = next((m for m in watched if isinstance(m, FUSABLE_ACTIVATIONS)
                    and calls.get(m) == 1 and m in inputs
                    and inputs[m] is outputs.get(norm)), None)
        folds.append(Fold(names[layer], names[norm], names[act] if act is not None else None))
    return folds


def _swap(target: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` at ``name`` in ``target``; return what was there."""
    parent_name, _, attr = name.rpartition('.')
    parent = target.get_submodule(parent_name) if parent_name else target
    old = getattr(parent, attr)
    setattr(parent, attr, module)
    return old


@contextmanager
def folded_norms(target: nn.Module, example: torch.Tensor) -> Iterator[List[Fold]]:
    """Fold the evaluation BatchNorms (and activations) that follow KW layers into them for
    the duration of the block (an export); everything is restored on exit.

    Args:
        target (nn.Module): The module being exported, in eval mode.
        example (Tensor): An input of ``target`` (one forward pass finds the folds).

    Yields:
        list[Fold]: What was folded.

    Example:
        >>> with torch.no_grad(), use_kw_impl('export'), folded_norms(model, x) as folds:
        ...     program = torch.export.export(model, (x, ))
    """
    folds = find_folds(target, example)
    restore: List[Tuple[str, nn.Module]] = []
    layers = []
    try:
        for fold in folds:
            layer = target.get_submodule(fold.layer)
            norm = target.get_submodule(fold.norm)
            act = target.get_submodule(fold.act) if fold.act else None
            scale, shift = norm_factors(norm)
            layer.export_epilogue = Epilogue(scale, shift, act)
            layers.append(layer)
            restore.append((fold.norm, _swap(target, fold.norm, nn.Identity())))
            if fold.act:
                restore.append((fold.act, _swap(target, fold.act, nn.Identity())))
        yield folds
    finally:
        for name, module in reversed(restore):
            _swap(target, name, module)
        for layer in layers:
            del layer.export_epilogue
