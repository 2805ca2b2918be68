"""The new KW models of kw_mm.KWBackbone (kw_mm/analysis/wrapped_zoo.py): ResNet-101,
ResNeXt-50 32x4d, RegNetX-4.0GF, EfficientNet-B0 and ConvNeXt-Small build at the budgets of
the table (meta device: shapes only)."""
import pytest

from kw_mm.analysis.wrapped_zoo import WRAPPED_MODELS, ZOO_BUDGETS, classifier_config
from kw_mm.apis import build_model
from kw_mm.cnn import KWConvNd

NAMES = list(WRAPPED_MODELS)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('budget', [b for b in ZOO_BUDGETS if b != 1])
def test_builds_at_the_table_budgets(name, budget):
    model = build_model(classifier_config(WRAPPED_MODELS[name], budget), device='meta')
    manager = model.backbone.warehouse_manager
    for spec in manager.specs:
        assert spec.num_cells == max(int(spec.num_mixtures * budget), 1)
    plan = model.backbone.kw_plan
    assert set(plan.warehouses) == {s.name for s in manager.specs}
    assert sum(isinstance(m, KWConvNd) for m in model.modules()) == \
        sum(len(w.layers) for w in plan.warehouses.values())
