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

from kw_mm.analysis.wrapped_zoo import WRAPPED_MODELS, classifier_config
from kw_mm.apis import build_model
from tests.helpers.export_checks import check_round_trip, make_trained_like

#: Input side: every backbone keeps a 2x2 map after its last stride-32 stage.
SIZE = 64


@pytest.mark.slow  # exports a deep network
@pytest.mark.parametrize('name', list(WRAPPED_MODELS))
def test_wrapped_model_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(classifier_config(WRAPPED_MODELS[name], 1))
    target = make_trained_like(model, SIZE, center=False)
    check_round_trip(target, str(tmp_path / f'{name}.onnx'), SIZE, optimize=False)
