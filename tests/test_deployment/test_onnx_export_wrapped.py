"""ONNX round trip of the KW models of kw_mm.KWBackbone (kw_mm/analysis/wrapped_zoo.py):
ResNet-101, ResNeXt-50 32x4d, RegNetX-4.0GF, EfficientNet-B0 and ConvNeXt-Small at 1x.

Each classifier is exported with a symbolic batch and run by onnxruntime at batch 1 and 3
against PyTorch (its fast KW paths), on small images. As in test_onnx_export.py the weights
are made trained-like first: t = 0, attentions concentrated on their assigned cells, norms
calibrated on images. The norms only rescale (``center=False``, see ``calibrate_batch_norms``)
and ConvNeXt's layer scales are 1 rather than their 1e-6 initialization (which would leave
every KW layer out of the scores): so the scores depend on every KW layer -- 1% of noise in the
warehouses moves them a hundred times the tolerance -- and float32 rounding stays far below it.

The graph optimizer of ``torch.onnx`` is left out (``optimize=False``): it takes most of the
export time of these deep networks and is tested on the paper's models in test_onnx_export.py.
"""
import pytest
import torch
import torch.nn as nn

from kw_mm import set_temperature
from kw_mm.analysis.wrapped_zoo import WRAPPED_MODELS, classifier_config
from kw_mm.apis import build_model
from kw_mm.cnn import KWAttention, use_kw_impl
from kw_mm.deployment import (ExportTarget, check_onnx, export_onnx, onnx_batch_dims,
                              relative_error)
from tests.test_deployment.test_onnx_export import (TOLERANCE, calibrate_batch_norms,
                                                    concentrate_attentions)

#: Input side: every backbone keeps a 2x2 map after its last stride-32 stage.
SIZE = 64
#: ConvNeXt's layer scale, as trained ConvNeXts have it in magnitude.
LAYER_SCALE = 1.0
#: Relative noise put in the warehouses to show the scores depend on them.
CELL_NOISE = 0.01


def trained_like(name: str) -> ExportTarget:
    torch.manual_seed(0)
    model = build_model(classifier_config(WRAPPED_MODELS[name], 1))
    set_temperature(model, 0.0)
    concentrate_attentions(model)
    with torch.no_grad():
        for key, param in model.backbone.named_parameters():
            if key.endswith('.gamma'):  # ConvNeXt blocks' layer scale
                param.fill_(LAYER_SCALE)
    target = ExportTarget(model, 'mmpretrain')
    calibrate_batch_norms(target, torch.randn(4, 3, SIZE, SIZE,
                                              generator=torch.Generator().manual_seed(2)),
                          center=False)
    return target


def scores_with_noisy_cells(target: nn.Module, x: torch.Tensor) -> torch.Tensor:
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


@pytest.mark.slow  # exports a deep network
@pytest.mark.parametrize('name', list(WRAPPED_MODELS))
def test_wrapped_model_round_trip(name, tmp_path):
    target = trained_like(name)
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
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
    path = export_onnx(target, str(tmp_path / f'{name}.onnx'), (3, SIZE, SIZE),
                       dynamic_batch=True, optimize=False)
    dims = onnx_batch_dims(path)
    assert all(not d.isdigit() for d in dims), f'batch dimension not symbolic: {dims}'
    errors = check_onnx(path, target, (3, SIZE, SIZE), batch_sizes=(1, 3))
    print(f'{name}: max relative error batch 1 {errors[1]:.2e}, batch 3 {errors[3]:.2e}')
    assert set(errors) == {1, 3} and max(errors.values()) < TOLERANCE, errors
