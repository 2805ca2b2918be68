"""The ONNX round trip of a KW classifier, as the deployment tests check it.

A random KW network at t = 0 is chaotic: float32 comparisons of it mean nothing. The tests make
the weights "trained-like" first (:func:`make_trained_like`) and then check, before exporting,
that the network is alive, its attentions differ between samples, its scores depend on its
warehouses and PyTorch's two KW implementations agree on it (:func:`check_round_trip`).
"""
from typing import Optional

import torch
import torch.nn as nn

from kw_mm import set_temperature
from kw_mm.cnn import AttentionBatchNorm1d, KWAttention, use_kw_impl
from kw_mm.deployment import (ExportTarget, check_onnx, export_onnx, onnx_batch_dims,
                              relative_error)

#: Largest relative error of an exported model against PyTorch.
TOLERANCE = 1e-4
#: Logit added to each mixture's assigned cell (:func:`concentrate_attentions`).
ATTENTION_FOCUS = 32.0
#: ConvNeXt's layer scale, as trained ConvNeXts have it in magnitude (initialized 1e-6, which
#: would leave every KW layer of a block out of the scores).
LAYER_SCALE = 1.0
#: Relative noise put in the warehouses to show the scores depend on them.
CELL_NOISE = 0.01


def calibrate_batch_norms(module: nn.Module, inputs: torch.Tensor, center: bool = True) -> None:
    """Give the network's BatchNorms the statistics of their input on ``inputs``, as training
    would (eval mode throughout, so frozen norms are calibrated too). The attentions'
    BatchNorm1d keep their defaults: statistics of a few pooled vectors would make the
    attentions ill-conditioned and amplify float rounding without bound.

    With ``center=False`` a norm only rescales its input (running mean 0, running variance the
    mean square): removing the mean of a ReLU's output magnifies the relative size of what is
    left, rounding errors included, and over the tens of layers of a ResNet-101 or RegNetX of
    random weights that alone brings two float32 implementations (even of the plain network)
    to the 1e-4 the exports are held to. Rescaled, the activations keep their size and the
    network its sensitivity to every layer."""
    def hook(norm, args):
        x = args[0].detach()
        dims = [d for d in range(x.dim()) if d != 1]
        if center:
            norm.running_mean.copy_(x.mean(dims))
            norm.running_var.copy_(x.var(dims, unbiased=False))
        else:
            norm.running_mean.zero_()
            norm.running_var.copy_(x.pow(2).mean(dims))

    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and not isinstance(m, AttentionBatchNorm1d)]
    handles = [m.register_forward_pre_hook(hook) for m in norms]
    module.eval()
    with torch.no_grad():
        module(inputs)
    for handle in handles:
        handle.remove()


def concentrate_attentions(model: nn.Module, strength: float = ATTENTION_FOCUS) -> None:
    """Add ``strength`` to the logit of every mixture's assigned cell (fc2 bias)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, KWAttention):
                assert not m.use_basis
                m.fc2.bias.add_(strength * m.beta.flatten())


def make_trained_like(model: nn.Module, size: int, scope: str = 'mmpretrain',
                      part: Optional[str] = None, center: bool = True) -> ExportTarget:
    """``model`` (of the toolbox ``scope``) at t = 0 with concentrated attentions, ConvNeXt
    layer scales :data:`LAYER_SCALE` and norms calibrated on ``size`` x ``size`` images, as the
    export target of its ``part``."""
    set_temperature(model, 0.0)
    concentrate_attentions(model)
    with torch.no_grad():
        for key, param in model.backbone.named_parameters():
            if key.endswith('.gamma'):  # ConvNeXt blocks' layer scale
                param.fill_(LAYER_SCALE)
    target = ExportTarget(model, scope, part)
    calibrate_batch_norms(target, torch.randn(4, 3, size, size,
                                              generator=torch.Generator().manual_seed(2)),
                          center=center)
    return target


def scores_with_noisy_cells(target: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The scores of ``x`` with :data:`CELL_NOISE` of relative noise in every warehouse (the
    warehouses are restored afterwards)."""
    weights = target.model.backbone.warehouse_manager.weights
    saved = [w.detach().clone() for w in weights]
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for w in weights:
            w.mul_(1 + CELL_NOISE * torch.randn(w.shape, generator=gen))
        scores = target(x)
        for w, s in zip(weights, saved):
            w.copy_(s)
    return scores


def check_round_trip(target: ExportTarget, path: str, size: int,
                     optimize: bool = True) -> dict:
    """Check that ``target`` is a well-conditioned live KW network whose scores depend on its
    warehouses, export it with a symbolic batch to ``path`` and compare onnxruntime with
    PyTorch at batch 1 and 3 (< :data:`TOLERANCE`); returns the errors by batch size."""
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(3))
    spread = []  # how much each attention differs between two samples
    handles = [m.register_forward_hook(lambda m, a, out: spread.append(
        (out[0] - out[1]).abs().max().item())) for m in target.modules()
        if isinstance(m, KWAttention)]
    with torch.no_grad():
        scores = target(x)
    for handle in handles:
        handle.remove()
    with torch.no_grad(), use_kw_impl('reference'):
        reference = target(x)
    assert scores.shape == (3, 1000) and scores.std() > 0.1  # a live network
    assert max(spread) > 0.05  # per-sample attentions
    assert relative_error(scores_with_noisy_cells(target, x), scores) > 100 * TOLERANCE
    assert relative_error(scores, reference) < TOLERANCE / 2  # a well-conditioned one
    export_onnx(target, path, (3, size, size), dynamic_batch=True, optimize=optimize)
    dims = onnx_batch_dims(path)
    assert all(not d.isdigit() for d in dims), f'batch dimension not symbolic: {dims}'
    errors = check_onnx(path, target, (3, size, size), batch_sizes=(1, 3))
    print(f'{path}: max relative error batch 1 {errors[1]:.2e}, batch 3 {errors[3]:.2e}')
    assert set(errors) == {1, 3} and max(errors.values()) < TOLERANCE, errors
    return errors
