"""kw_mm.cnn.explain: the printed plan is the plan the fast path runs."""
import pytest
import torch
import torch.nn as nn

import kw_mm.cnn.fast as fast
import kw_mm.cnn.fast_im2col as fast_im2col
import kw_mm.cnn.fast_im2col_inference as fast_im2col_inference
from kw_mm.cnn import WarehouseManager
from kw_mm.cnn.blocks import plan_blocks
from kw_mm.cnn.explain import explain_layer, explain_model, format_explanation


def build(specs) -> nn.Module:
    manager = WarehouseManager()
    net = nn.Module()
    net.manager = manager
    net.layers = nn.ModuleList([manager.reserve(warehouse_name='w', bias=False, **spec)
                                for spec in specs])
    manager.store()
    manager.allocate(net)
    net.forward = lambda x: [layer(x) for layer in net.layers]
    return net


LATE = dict(in_channels=512, out_channels=512, kernel_size=3, padding=1)
DEPTHWISE = dict(in_channels=512, out_channels=512, kernel_size=3, padding=1, groups=512)
POINTWISE = dict(in_channels=512, out_channels=512, kernel_size=1)


def test_explain_late_depthwise_pointwise():
    torch.manual_seed(0)
    late, depthwise, pointwise = (layer.geometry for layer in
                                  build([LATE, DEPTHWISE, POINTWISE]).layers)
    plan = explain_layer(late, (8, 512, 7, 7), num_cells=27)
    assert plan.path == 'im2col' and '49 output pixels <= 512' in plan.route
    assert plan.blocks == plan_blocks(late, 8, 4, torch.device('cpu'), path='im2col')
    assert len(plan.blocks) > 1 and max(plan.block_bytes) <= plan.budget
    assert 'L2' in plan.budget_rule and f'{torch.get_num_threads()} threads' in plan.budget_rule
    assert 'columns' in plan.extra and 'im2col' in plan.describe()
    # cells of 1 input channel (shared with the depth-wise layer): im2col in inference too
    assert plan.inference_path == 'im2col'
    assert plan.extra['inference'] == 'same path (cells of 1 < 16 input channels)'
    alone = build([LATE]).layers[0].geometry  # cells 512x512
    plan = explain_layer(alone, (8, 512, 7, 7), num_cells=27)
    assert plan.inference_path == 'im2col-transposed' and 'kept transposed' in plan.describe()
    assert explain_layer(alone, (8, 512, 7, 7), num_cells=108).inference_path == 'im2col'
    assert explain_layer(alone, (1, 512, 7, 7), num_cells=27).inference_path == 'im2col'
    unknown = explain_layer(alone, (8, 512, 7, 7))
    assert unknown.inference_path == 'im2col' and 'warehouse size not given' in unknown.describe()
    assert plan.inference_blocks == 512 // fast.plan_input_block(alone, 8, 4,
                                                                 torch.device('cpu'))
    assert explain_layer(late, (8, 512, 56, 56)).path == 'grouped'
    dw = explain_layer(depthwise, (8, 512, 7, 7))
    assert dw.path == 'grouped' and 'groups=512' in dw.route and dw.blocks == [(0, 512)]
    point = explain_layer(pointwise, (8, 512, 7, 7), num_cells=27)
    assert point.path == point.inference_path == 'im2col'
    assert point.extra['inference'].startswith('same path (')
    meta = explain_layer(late, (8, 512, 7, 7), device=torch.device('meta'))
    assert meta.blocks == [(0, 512)] and meta.budget is None and 'one block' in meta.budget_rule
    given = explain_layer(late, (8, 512, 7, 7), block_bytes=2**20)
    assert given.budget == 2**20 and given.budget_rule == 'given'


@pytest.mark.parametrize('spec,shape', [(LATE, (4, 512, 3, 3)), (DEPTHWISE, (2, 512, 5, 5)),
                                        (dict(in_channels=64, out_channels=64, kernel_size=3,
                                              padding=1), (2, 64, 12, 12))])
def test_explained_plan_is_the_plan_that_runs(spec, shape, monkeypatch):
    """kw_conv records which path ran with which blocks; explain_layer says the same."""
    ran = []
    original_im2col, original_blocks = fast_im2col.forward, fast._forward_blocks
    original_transposed = fast_im2col_inference.forward
    monkeypatch.setattr(fast_im2col_inference, 'forward', lambda *a: ran.append(
        ('im2col-transposed', a[4].cell_in // a[5])) or original_transposed(*a))
    monkeypatch.setattr(fast_im2col, 'forward',
                        lambda *a: ran.append(('im2col', a[5])) or original_im2col(*a))
    monkeypatch.setattr(fast, '_forward_blocks',
                        lambda *a: ran.append(('grouped', list(a[5]))) or original_blocks(*a))
    torch.manual_seed(0)
    layer = build([spec]).layers[0]
    with torch.no_grad():
        layer(torch.randn(shape))
    plan = explain_layer(layer.geometry, shape, num_cells=layer.cells.shape[0])
    expected = plan.blocks if plan.inference_path == plan.path else plan.inference_blocks
    assert ran == [(plan.inference_path, expected)]


def test_explain_model_lists_every_layer():
    torch.manual_seed(0)
    net = build([LATE, POINTWISE])
    plans = explain_model(net, torch.randn(2, 512, 7, 7))
    assert [name for name, _ in plans] == ['layers.0', 'layers.1']
    text = format_explanation(plans)
    assert text.startswith('CPU: ') and 'threads' in text.splitlines()[0]
    assert 'layers.0 [2x512x7x7]: im2col' in text and 'layers.1 [2x512x7x7]: im2col' in text
