"""``torch.compile`` of the rival backbones (DY-Conv, ODConv, CondConv).

Three checks per model, on tiny inputs (batch 2, 32x32):

* **graph breaks** (``torch._dynamo.explain``, Dynamo only): a whole backbone is one graph in
  evaluation and in a training step, or has at most the breaks listed (each with its reason);
  no break per layer;
* **compiled equals eager**: the compiled model's outputs, and in a training step the gradient
  of every parameter and the updated BatchNorm statistics, equal the eager model's (relative
  error :data:`RTOL`, the largest difference over the largest value of each tensor). The
  backend is ``aot_eager`` (Dynamo's graph and AOTAutograd's forward and backward graphs,
  executed by eager kernels): it checks that the traced graphs compute what the Python code
  computes, without inductor's C++ code generation (minutes of compiler time per model);
* **runtime state**: the softmax temperature (changed by the hook at every iteration of an
  anneal) reaches the compiled model without a recompilation per value.
"""
import copy
from typing import Dict, List, Tuple

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn as nn
from mmpretrain.registry import MODELS

from kw_mm.cnn.dynamic import set_softmax_temperature

pytestmark = pytest.mark.slow  # compiles models (C++ code generation for inductor)

#: Largest relative difference between compiled and eager tensors.
RTOL = 1e-5

#: name -> backbone config (tiny where the architecture allows it).
BACKBONES: Dict[str, dict] = {
    'dyconv4x-resnet18': dict(type='kw_mm.DynamicResNet', method='dyconv', depth=18,
                              base_channels=16, stem_channels=16),
    'odconv4x-resnet18': dict(type='kw_mm.DynamicResNet', method='odconv', depth=18,
                              base_channels=16, stem_channels=16),
    'condconv8x-resnet18': dict(type='kw_mm.DynamicResNet', method='condconv', depth=18,
                                base_channels=16, stem_channels=16),
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


# ------------------------------------------------------------------------------ helpers
def outputs(result) -> List[torch.Tensor]:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference over the largest magnitude of ``b`` (the eager value)."""
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / scale if scale else (a - b).abs().max().item()


def graph_breaks(model: nn.Module, inputs: tuple, train: bool):
    """``torch._dynamo.explain`` of the model in training or evaluation (without gradients)."""
    model.train(train)
    torch._dynamo.reset()
    with torch.set_grad_enabled(train):
        return torch._dynamo.explain(model)(*inputs)


def check_compiled_equals_eager(model: nn.Module, inputs: tuple, backend: str) -> Dict[str, float]:
    """Compile a copy of ``model``; return the largest relative errors of the outputs in
    evaluation, and of the outputs, gradients and BatchNorm statistics of a training step."""
    torch._dynamo.reset()
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, backend=backend)
    errors = {}
    model.eval()
    twin.eval()
    with torch.no_grad():
        errors['eval'] = max(relative_error(c, e) for c, e in zip(
            outputs(compiled(*inputs)), outputs(model(*inputs))))
    model.train()
    twin.train()
    results = []
    for net, fn in ((model, model), (twin, compiled)):
        outs = outputs(fn(*inputs))
        sum(o.square().mean() for o in outs).backward()
        results.append(outs)
    errors['train'] = max(relative_error(c, e) for c, e in zip(results[1], results[0]))
    grads = [(n, p.grad, q.grad) for (n, p), q in zip(model.named_parameters(),
                                                       twin.parameters())]
    missing = [n for n, g, h in grads if (g is None) != (h is None)]
    assert not missing, f'gradients computed in one model only: {missing}'
    errors['grad'] = max(relative_error(h, g) for _, g, h in grads if g is not None)
    stats = [(a, b) for a, b in zip(model.buffers(), twin.buffers()) if a.is_floating_point()]
    errors['buffers'] = max((relative_error(b, a) for a, b in stats), default=0.0)
    return errors


# ------------------------------------------------------------------------------ backbones
@pytest.mark.parametrize('name', sorted(BACKBONES))
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_backbone_has_no_graph_break_per_layer(name, train):
    model = build_backbone(name)
    explanation = graph_breaks(model, backbone_inputs(), train)
    allowed = ALLOWED_BREAKS.get(name, (0, 0))[int(train)]
    reasons = [r.reason.splitlines()[0] for r in explanation.break_reasons]
    assert explanation.graph_break_count <= allowed, reasons
    assert explanation.graph_count == explanation.graph_break_count + 1


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_compiled_backbone_equals_eager(name):
    errors = check_compiled_equals_eager(build_backbone(name), backbone_inputs(), 'aot_eager')
    assert max(errors.values()) < RTOL, errors


# ------------------------------------------------------------------------------ runtime state
@pytest.mark.parametrize('name, setter, values', [
    ('odconv4x-mobilenet-v2', set_softmax_temperature, (30.0, 20.0, 10.0, 1.0)),
])
def test_compiled_model_follows_the_temperature(name, setter, values):
    """The hook sets the temperature at every iteration of an anneal: the compiled model uses
    the current value, and compiles at most once more for a changing value (it becomes an
    input of the graph)."""
    model = build_backbone(name).eval()
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counter)
    inputs = backbone_inputs()
    with torch.no_grad():
        for t in values:
            setter(model, t)
            errors = [relative_error(c, e) for c, e in zip(outputs(compiled(*inputs)),
                                                           outputs(model(*inputs)))]
            assert max(errors) < RTOL, (t, errors)
    assert counter.frame_count <= 3
