"""kw_mm.cnn.explain: the printed plan is the plan the fast path runs."""
import pytest
import torch
import torch.nn as nn

from kw_mm.cnn import WarehouseManager
from kw_mm.cnn.explain import explain_layer, explain_model, format_explanation
from kw_mm.cnn.fast import use_kw_impl
from kw_mm.cnn.plan import THRESHOLDS, cached_plan, plan_layer, planning_as, using_thresholds


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
    plan = explain_layer(late, (8, 512, 7, 7), num_cells=27, needs_grad=True)
    assert plan.path == 'im2col' and '49 output pixels <= 512' in plan.why()
    assert plan.order == 'pixel-major' and 'products pixel-major (49' in plan.describe()
    assert plan.blocks == cached_plan(late, (8, 512, 7, 7), torch.float32, 'cpu', True).blocks
    assert len(plan.blocks) > 1 and max(plan.block_bytes) <= plan.budget
    rule = plan.budget_rule()
    assert '2 x L2' in rule and f'{torch.get_num_threads()} threads' in rule
    assert 'columns' in plan.describe()
    # cells of 1 input channel (shared with the depth-wise layer): im2col in inference too
    plan = explain_layer(late, (8, 512, 7, 7), num_cells=27)
    assert plan.path == 'im2col' and '4 x L2' in plan.budget_rule()
    assert 'not im2col-transposed: cells of 1 < 16 input channels' in plan.describe()
    alone = build([LATE]).layers[0].geometry  # cells 512x512
    plan = explain_layer(alone, (8, 512, 7, 7), num_cells=27)
    assert plan.path == 'im2col-transposed' and 'kept transposed' in plan.describe()
    assert 'input channels' in plan.describe() and max(plan.block_bytes) <= plan.budget
    assert explain_layer(alone, (8, 512, 7, 7), num_cells=108).path == 'im2col'
    assert explain_layer(alone, (1, 512, 7, 7), num_cells=27).path == 'im2col'
    unknown = explain_layer(alone, (8, 512, 7, 7))
    assert unknown.path == 'im2col' and 'no transposed copy' in unknown.describe()
    assert explain_layer(late, (8, 512, 56, 56)).path == 'grouped'
    dw = explain_layer(depthwise, (8, 512, 7, 7))
    assert dw.path == 'grouped' and 'groups=512' in dw.why() and dw.blocks == ((0, 512), )
    assert 'grouped layers are one block' in dw.budget_rule()
    point = explain_layer(pointwise, (8, 512, 7, 7), num_cells=27)
    assert point.path == 'im2col' and 'not im2col-transposed: cells of 1' in point.describe()
    point = explain_layer(build([POINTWISE]).layers[0].geometry, (8, 512, 7, 7), num_cells=27)
    assert 'point-wise: its input is its columns' in point.describe()
    assert explain_layer(pointwise, (8, 512, 56, 56)).path == 'pointwise'
    given = explain_layer(late, (8, 512, 7, 7), block_bytes=2**20)
    assert given.budget == 2**20 and given.budget_rule() == 'given'


def test_every_device_bounds_a_layers_kernels():
    """Off the CPU a layer's kernels come in blocks of at most the device budget: KW ResNet50's
    layer4 3x3 layer at batch 512 would otherwise take 4.5 GB at once."""
    torch.manual_seed(0)
    late = build([LATE]).layers[0].geometry
    total = 512 * late.num_mixtures * late.cell_out * late.cell_in * 4
    assert total == 512 * 512 * 512 * 9 * 4  # 4.5 GiB
    for needs_grad in (False, True):
        plan = plan_layer(late, (512, 512, 7, 7), torch.float32, 'cuda', needs_grad,
                          num_cells=late.num_mixtures)
        assert plan.device_type == 'cuda' and plan.budget == THRESHOLDS.device_block_bytes
        assert max(plan.block_bytes) <= plan.budget and sum(plan.block_bytes) == total
        assert 'cuda: device_block_bytes' in plan.describe()
    # planned as a GPU while the tensors are on the CPU (memory models), and back
    with planning_as('cuda'):
        assert plan_layer(late, (512, 512, 7, 7), torch.float32, 'cpu', True).budget == \
            THRESHOLDS.device_block_bytes
        assert cached_plan(late, (512, 512, 7, 7), torch.float32, 'cpu', True).device_type == \
            'cuda'
    assert cached_plan(late, (512, 512, 7, 7), torch.float32, 'cpu', True).device_type == 'cpu'
    with pytest.raises(ValueError, match="got 'cuda:0'"):
        with planning_as('cuda:0'):
            pass


@pytest.mark.parametrize('spec,shape', [(LATE, (4, 512, 3, 3)), (DEPTHWISE, (2, 512, 5, 5)),
                                        (POINTWISE, (2, 512, 4, 4)),
                                        (dict(in_channels=64, out_channels=64, kernel_size=3,
                                              padding=1), (2, 64, 12, 12))])
@pytest.mark.parametrize('device_type', ['cpu', 'cuda'])
def test_explained_plan_is_the_plan_that_runs(spec, shape, device_type):
    """The layer runs the cached plan explain_layer describes (the same object), and that plan
    gives the oracle's output, whatever device it was planned for."""
    torch.manual_seed(0)
    layer = build([spec]).layers[0]
    x = torch.randn(shape)
    with torch.no_grad(), planning_as(device_type):
        out = layer(x)
        plan = explain_layer(layer.geometry, shape, num_cells=layer.cells.shape[0])
        assert cached_plan(layer.geometry, shape, torch.float32, 'cpu', False, 'auto',
                           layer.cells.shape[0]) == plan
        with use_kw_impl('reference'):
            ref = layer(x)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_explain_model_lists_every_layer():
    torch.manual_seed(0)
    net = build([LATE, POINTWISE])
    explained = explain_model(net, torch.randn(2, 512, 7, 7))
    assert [name for name, _, _ in explained] == ['layers.0', 'layers.1']
    assert all(not inference.needs_grad and training.needs_grad
               for _, inference, training in explained)
    text = format_explanation(explained)
    lines = text.splitlines()
    assert text.startswith('CPU: ') and 'threads' in lines[0]
    assert lines[1].startswith('routing: im2col') and 'budgets: planned for cpu' in lines[2]
    assert 'layers.0 [2x512x7x7]: im2col' in text and 'layers.1 [2x512x7x7]: im2col' in text
    assert '; with gradients: im2col, ' in lines[3]
    with planning_as('cuda'):
        assert 'budgets: planned for cuda' in format_explanation(explained)


def test_thresholds_and_forced_paths_change_the_plan():
    """A block of code can plan with other thresholds (to re-derive one) or force a path; the
    explanation says so."""
    torch.manual_seed(0)
    net = build([LATE])
    late = net.layers[0].geometry
    assert explain_layer(late, (2, 512, 7, 7), num_cells=27).path == 'im2col'  # batch < 4
    with using_thresholds(min_batch=2) as th:
        assert th.min_batch == 2 and th.min_cell_in == THRESHOLDS.min_cell_in
        assert explain_layer(late, (2, 512, 7, 7), num_cells=27).path == 'im2col-transposed'
        assert 'the batch >= 2' in format_explanation([])
    assert explain_layer(late, (2, 512, 7, 7), num_cells=27).path == 'im2col'
    with pytest.raises(ValueError, match=r"unknown thresholds \['min_bach'\]"):
        with using_thresholds(min_bach=2):
            pass
    forced = explain_layer(late, (2, 512, 7, 7), kw_impl='grouped')
    assert forced.path == 'grouped' and forced.why() == "kw_impl='grouped'"
    with use_kw_impl('grouped'):
        (_, inference, training), = explain_model(net, torch.randn(2, 512, 7, 7))
    assert inference.path == training.path == 'grouped'
    with pytest.raises(ValueError, match='runs no fast path'):
        explain_layer(late, (2, 512, 7, 7), kw_impl='reference')
