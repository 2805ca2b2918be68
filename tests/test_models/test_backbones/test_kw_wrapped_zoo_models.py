"""The new KW models of kw_mm.KWBackbone (kw_mm/analysis/wrapped_zoo.py): ResNet-101,
ResNeXt-50 32x4d, RegNetX-4.0GF, EfficientNet-B0 and ConvNeXt-Small
train a step at 1x (building at the other budgets: test_kw_wrapped_models.py). Tiny inputs."""
import math

import pytest
import torch

from kw_mm.analysis.wrapped_zoo import WRAPPED_MODELS, classifier_config
from kw_mm.apis import build_model

#: Input side of the training step: the smallest that keeps a map larger than
#: one pixel before the last stride-2 layer of every backbone (stride 32).
SIZE = 32
NAMES = list(WRAPPED_MODELS)


@pytest.fixture(scope='module')
def kw1x_models():
    """name -> KW 1x classifier, built once for the module (seeded)."""
    built = {}

    def get(name):
        if name not in built:
            torch.manual_seed(0)
            built[name] = build_model(classifier_config(WRAPPED_MODELS[name], 1))
        return built[name]
    return get


@pytest.mark.parametrize('name', NAMES)
def test_training_step(name, kw1x_models):
    from mmpretrain.structures import DataSample
    model = kw1x_models(name)
    model.train()
    x = torch.randn(2, 3, SIZE, SIZE)
    samples = [DataSample().set_gt_label(i) for i in range(2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    cells = [w.detach().clone() for w in model.backbone.warehouse_manager.weights]
    losses = model(x, samples, mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert math.isfinite(loss.item())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    changed = [not torch.equal(a, b) for a, b in
               zip(cells, model.backbone.warehouse_manager.weights)]
    assert all(changed), f'warehouses without an update: {changed}'
