"""``torch.compile`` of every dynamic backbone: the KW backbones (KW ResNet18/50 at 1x and 4x,
KW MobileNetV2, KW* MobileNetV2, KW ConvNeXt, KW DeiT, ``KWBackbone`` around mmpretrain's
ResNet) and the rivals (DY-Conv, ODConv, CondConv).

Checks per model, on tiny inputs (batch 2, 32x32), with the helpers of
:mod:`tests.helpers.compile_checks` (the KW layer paths one by one:
``tests/test_cnn/test_compile_paths.py``):

* **graph breaks** (``torch._dynamo.explain``, Dynamo only): a whole backbone is one graph in
  evaluation and in a training step, or has at most the breaks listed in
  :data:`ALLOWED_BREAKS` (each with its reason); no break per layer;
* **compiled equals eager** (backend ``aot_eager``): outputs, gradients and BatchNorm
  statistics within :data:`~tests.helpers.compile_checks.RTOL`, in float64 (a random tiny
  network amplifies float32 rounding beyond that in a training step; see
  :mod:`tests.helpers.compile_checks`), and the evaluation outputs in float32 too;
* **several models in one process**: two different KW models and two equal ones compiled one
  after the other (their layers share cached plans), each equal to its eager self;
* **runtime state**: the temperature (changed by the hook at every iteration of an anneal)
  reaches the compiled model without a recompilation per value;
* **inductor**: one KW model through the default backend's code generation, evaluation and a
  training step (float64 as well, and float32 evaluation).
"""
from typing import Dict, Tuple

import pytest
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS

from kw_mm.cnn import set_temperature
from kw_mm.cnn.dynamic import set_softmax_temperature
from tests.helpers.compile_checks import (RTOL, break_reasons, check_compiled_equals_eager,
                                          compiled_counter, graph_breaks, in_float64,
                                          largest_error, outputs)

pytestmark = pytest.mark.slow  # compiles models (C++ code generation for inductor)

#: A ResNet small enough to compile in seconds (mmpretrain's and kw_mm's argument names).
TINY_RESNET = dict(base_channels=16, stem_channels=16)

#: name -> backbone config (tiny where the architecture allows it).
BACKBONES: Dict[str, dict] = {
    'kw1x-resnet18': dict(type='kw_mm.KWResNet', depth=18, budget=1, **TINY_RESNET),
    'kw4x-resnet18': dict(type='kw_mm.KWResNet', depth=18, budget=4, **TINY_RESNET),
    'kw1x-resnet50': dict(type='kw_mm.KWResNet', depth=50, budget=1, **TINY_RESNET),
    'kw4x-resnet50': dict(type='kw_mm.KWResNet', depth=50, budget=4, **TINY_RESNET),
    'kw1x-mobilenet-v2': dict(type='kw_mm.KWMobileNetV2', widen_factor=0.5, budget=1),
    'kwstar4x-mobilenet-v2': dict(type='kw_mm.KWMobileNetV2', widen_factor=0.5, budget=4,
                                  omni_attention=True),
    'kw1x-convnext': dict(type='kw_mm.KWConvNeXt',
                          arch=dict(depths=[1, 1, 3, 1], channels=[8, 16, 32, 64])),
    'kw1x-deit-tiny': dict(type='kw_mm.KWVisionTransformer', arch='deit-tiny', budget=1,
                           img_size=32),
    'kw1x-wrapped-resnet18': dict(type='kw_mm.KWBackbone', budget=1, backbone=dict(
        type='mmpretrain.ResNet', depth=18, **TINY_RESNET)),
    'dyconv4x-resnet18': dict(type='kw_mm.DynamicResNet', method='dyconv', depth=18,
                              **TINY_RESNET),
    'odconv4x-resnet18': dict(type='kw_mm.DynamicResNet', method='odconv', depth=18,
                              **TINY_RESNET),
    'condconv8x-resnet18': dict(type='kw_mm.DynamicResNet', method='condconv', depth=18,
                                **TINY_RESNET),
    'odconv4x-mobilenet-v2': dict(type='kw_mm.DynamicMobileNetV2', method='odconv',
                                  widen_factor=0.5),
}
#: Graph breaks allowed per backbone in (evaluation, training); every entry needs its reason.
ALLOWED_BREAKS: Dict[str, Tuple[int, int]] = {}


def build_backbone(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build(BACKBONES[name])


def backbone_inputs() -> Tuple[torch.Tensor]:
    return (torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), )


# ------------------------------------------------------------------------------ backbones
@pytest.mark.parametrize('name', sorted(BACKBONES))
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_backbone_has_no_graph_break_per_layer(name, train):
    model = build_backbone(name)
    explanation = graph_breaks(model, backbone_inputs(), train)
    allowed = ALLOWED_BREAKS.get(name, (0, 0))[int(train)]
    assert explanation.graph_break_count <= allowed, break_reasons(explanation)
    assert explanation.graph_count == explanation.graph_break_count + 1


def check_backbone(model: nn.Module, backend: str, reset: bool = True) -> None:
    """Compiled equals eager: evaluation in float32, evaluation and a training step in
    float64."""
    inputs = backbone_inputs()
    errors = check_compiled_equals_eager(model, inputs, backend, reset, train=False)
    assert max(errors.values()) < RTOL, ('float32', errors)
    errors = check_compiled_equals_eager(*in_float64(model, inputs), backend, reset)
    assert max(errors.values()) < RTOL, ('float64', errors)


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_compiled_backbone_equals_eager(name):
    model = build_backbone(name)
    set_temperature(model, 0.5)  # (rivals: no KW layer, nothing set)
    check_backbone(model, 'aot_eager')


# ------------------------------------------------------------------------------ several models
def test_several_kw_models_compile_in_one_process():
    """KW layers of equal geometry share one cached plan whatever model they belong to: models
    compiled one after the other in a process (two different ones, then two equal ones of
    different weights) each equal their eager selves, in evaluation and training."""
    torch._dynamo.reset()
    for i, name in enumerate(('kw1x-resnet18', 'kw4x-resnet18', 'kw1x-resnet18',
                              'kw1x-resnet18')):
        torch.manual_seed(i)
        model = MODELS.build(BACKBONES[name])
        set_temperature(model, 0.5)
        check_backbone(model, 'aot_eager', reset=False)


# ------------------------------------------------------------------------------ runtime state
@pytest.mark.parametrize('name, setter, values', [
    ('odconv4x-mobilenet-v2', set_softmax_temperature, (30.0, 20.0, 10.0, 1.0)),
    ('kw1x-resnet18', set_temperature, (1.0, 0.75, 0.5, 0.25, 0.0)),
    ('kwstar4x-mobilenet-v2', set_temperature, (1.0, 0.75, 0.5, 0.25, 0.0)),
])
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_compiled_model_follows_the_temperature(name, setter, values, train):
    """The hook sets the temperature at every iteration of an anneal: the compiled model uses
    the current value, and compiles at most twice more for a changing value (it becomes an
    input of the graph; KW's t = 0, after the anneal, skips the initialization's term)."""
    model, inputs = in_float64(build_backbone(name).train(train), backbone_inputs())
    compiled, counter = compiled_counter(model)
    with torch.set_grad_enabled(train):
        for t in values:
            setter(model, t)
            # (training: the BatchNorm statistics move twice per value, alike in both)
            error = largest_error(outputs(compiled(*inputs)), outputs(model(*inputs)))
            assert error < RTOL, (t, error)
    assert counter.frame_count <= 3


# ------------------------------------------------------------------------------ inductor
def test_inductor_equals_eager():
    """KW 1x ResNet18 (tiny) compiled by inductor, the default backend: evaluation and a
    training step equal eager (a training step in float64: inductor fuses and reorders float
    sums, see :mod:`tests.helpers.compile_checks`)."""
    model = build_backbone('kw1x-resnet18')
    set_temperature(model, 0.5)
    check_backbone(model, 'inductor')
