"""The fast KW paths (kw_mm.cnn.fast) against the straightforward oracle, forward and backward.

Every path of the plan's table (:data:`kw_mm.cnn.plan.PATHS`) in every product order it has, on
every layer kind it applies to (3x3, 1x1, depth-wise, strided, 1-D, 3-D, KWLinear, bias,
non-local basis, b < 1 with zero cells), batch 1 and N, contiguous and channels_last inputs,
t = 0, 0.5, 1, in one block and in two; outputs and the gradients of the input, the cells, every
attention parameter and the bias must agree with ``use_kw_impl('reference')`` to a relative
error below 1e-5. A path is chosen by its plan (``kw_impl`` / ``run_plan``), never by patching.
"""
import dataclasses
import itertools

import pytest
import torch
import torch.nn as nn

import kw_mm.cnn.fast_im2col as fast_im2col
from kw_mm.cnn import (KWAttention, KWConvNd, KWLinear, WarehouseManager, apply_kw_impl,
                       kw_conv_reference, set_temperature)
from kw_mm.cnn.blocks import row_blocks
from kw_mm.cnn.fast import get_kw_impl, kw_conv, needs_grad, run_plan, use_kw_impl
from kw_mm.cnn.functional import kw_attention_reference
from kw_mm.cnn.plan import (GROUPED, IM2COL, IM2COL_TRANSPOSED, PATH_RULES, PATHS, POINTWISE,
                            applies, im2col_rule, plan_layer)

TOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (0 when both are 0)."""
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def build(specs, **manager_kwargs) -> nn.Module:
    """A module holding a WarehouseManager and the KW layers of ``specs`` (reserve kwargs)."""
    manager = WarehouseManager(**manager_kwargs)
    net = nn.Module()
    net.manager = manager
    net.layers = nn.ModuleList([manager.reserve(**spec) for spec in specs])
    manager.store()
    manager.allocate(net)
    return net


def conv(cin, cout, k=3, **kw):
    spec = dict(in_channels=cin, out_channels=cout, kernel_size=k, padding=k // 2, bias=False,
                warehouse_name='w')
    spec.update(kw)
    return spec


# name -> (layer specs (the first is tested), manager kwargs, input shape without batch)
CASES = {
    # go = 2 (cells 8x8 from the gcd with the second layer), n != M
    '3x3': ([conv(8, 16), conv(8, 8)], {}, (8, 7, 7)),
    '3x3-bias-stride2-gi': ([conv(16, 16, stride=2, bias=True), conv(8, 8)], {}, (16, 9, 9)),
    '3x3-dilated': ([conv(8, 8, padding=2, dilation=2)], {}, (8, 9, 9)),
    '1x1-go-gi-bias': ([conv(16, 24, 1, bias=True), conv(8, 8, 1)], {}, (16, 5, 5)),
    '1x1-stride2': ([conv(16, 8, 1, stride=2), conv(8, 8, 1)], {}, (16, 7, 7)),
    'depthwise-bias': ([conv(8, 8, groups=8, bias=True), conv(16, 16, groups=16)], {},
                       (8, 6, 6)),
    'depthwise-stride2': ([conv(16, 16, stride=2, groups=16)], {}, (16, 7, 7)),
    'grouped': ([conv(8, 8, groups=2)], {}, (8, 5, 5)),
    'conv1d': ([conv(8, 16, layer_type='conv1d'), conv(8, 8, layer_type='conv1d')], {},
               (8, 10)),
    'conv3d': ([conv(4, 8, layer_type='conv3d')], {}, (4, 4, 4, 4)),
    'linear': ([dict(in_channels=12, out_channels=20, layer_type='linear', warehouse_name='w'),
                dict(in_channels=4, out_channels=4, layer_type='linear', warehouse_name='w')],
               {}, (5, 12)),
    'linear-2d-input': ([dict(in_channels=12, out_channels=8, layer_type='linear',
                              warehouse_name='w')], {}, (12, )),
    # b < 1: half-size cells (gi, go > 1) and mixtures that start as the zero cell
    'b0.5-zero-cells': ([conv(16, 16), conv(16, 32, 1)],
                        dict(cell_num_ratio=0.5, cell_inplane_ratio=0.5,
                             cell_outplane_ratio=0.5), (16, 6, 6)),
    'b0.25-zero-cells': ([conv(16, 16)], dict(cell_num_ratio=0.25, cell_inplane_ratio=0.5,
                                                cell_outplane_ratio=0.5), (16, 5, 5)),
    # ResNet50 1/2x: non-local basis (fc3 and the basis bias)
    'nonlocal-basis': ([conv(16, 16), conv(16, 32, 1), conv(32, 16, 1, stride=2)],
                       dict(cell_num_ratio=0.5, cell_inplane_ratio=0.5, cell_outplane_ratio=0.5,
                            nonlocal_basis_ratio=1 / 16), (16, 6, 6)),
    'b4': ([conv(8, 8), conv(8, 16, 1)], dict(cell_num_ratio=4), (8, 6, 6)),
}


def _layer_and_params(net):
    layer = net.layers[0]
    return layer, [p for p in net.parameters() if p.requires_grad]


def _in_layer(layer, x, run):
    """``run(conv, input)`` on the KW convolution of ``layer`` as the layer would call it
    (``KWLinear``: over its tokens)."""
    if not isinstance(layer, KWLinear):
        return run(layer, x)
    shape = x.shape
    out = run(layer.conv, x.reshape(shape[0], -1, shape[-1]).transpose(1, 2)).transpose(1, 2)
    return out.reshape(*shape[:-1], layer.out_features)


def two_blocks(plan):
    """The plan cut into two blocks of cell rows (input channels on the transposed path); one
    when there is only one row (or channel) to cut."""
    geo = plan.geometry
    size = geo.cell_in if plan.path == IM2COL_TRANSPOSED else geo.cell_out
    if plan.path == IM2COL_TRANSPOSED:
        half = size // 2 if size % 2 == 0 else size
    else:
        half = size // 2 if geo.groups == 1 and size > 1 else size
    return tuple((p, min(size, p + half)) for p in range(0, size, half))


def forced(path, order, blocked, ran):
    """``run(conv, x)`` executing the plan of ``conv`` for ``x`` forced to ``path`` in ``order``
    (two blocks if ``blocked``), or the straightforward implementation where ``path`` does not
    apply to the layer in that mode; ``ran`` records each use of ``path``."""
    def run(conv, x):
        cells = conv.cells
        alpha = conv.attention(x)
        plan = plan_layer(conv.geometry, x.shape, cells.dtype, x.device,
                          needs_grad(x, alpha, cells, conv.bias), kw_impl=path,
                          num_cells=cells.shape[0])
        if plan.path != path:
            with use_kw_impl('reference'):
                return conv(x)
        plan = dataclasses.replace(plan, order=order,
                                   blocks=two_blocks(plan) if blocked else plan.blocks)
        ran.append(plan.needs_grad)
        return run_plan(plan, x, alpha, cells, conv.bias)
    return run


def by_impl(impl):
    def run(conv, x):
        with use_kw_impl(impl):
            return conv(x)
    return run


def _run(layer, params, x, run, grad_out):
    y = _in_layer(layer, x, run)
    grads = torch.autograd.grad(y, [x] + params, grad_out, allow_unused=True)
    return y.detach(), grads


def _check(net, x, run=by_impl('auto'), train=True):
    """``run`` (see :func:`forced`) against the oracle: a training step's output and every
    gradient (if ``train``), then inference."""
    layer, params = _layer_and_params(net)
    x = x.detach().requires_grad_()
    if train:
        net.train()
        with torch.no_grad(), use_kw_impl('reference'):
            shape = layer(x).shape
        grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        y_fast, g_fast = _run(layer, params, x, run, grad_out)
        y_ref, g_ref = _run(layer, params, x, by_impl('reference'), grad_out)
        assert y_fast.shape == y_ref.shape
        assert rel_err(y_fast, y_ref) < TOL
        names = ['input'] + [n for n, p in net.named_parameters() if p.requires_grad]
        for name, a, b in zip(names, g_fast, g_ref):
            if b is None:
                assert a is None or not a.any(), name
                continue
            assert a is not None, name
            assert a.shape == b.shape, name
            assert rel_err(a, b) < TOL, (name, rel_err(a, b))
    # eval (no autograd: the direct path)
    net.eval()
    with torch.no_grad():
        y_fast = _in_layer(layer, x, run)
        y_ref = _in_layer(layer, x, by_impl('reference'))
    assert rel_err(y_fast, y_ref) < TOL


#: Every way a layer can run: each path of the table in each product order it has.
ROUTES = [(path, order) for path in PATHS for order in PATH_RULES[path].orders]
#: The cases each path must run (the others: it does not apply to those layers).
POINTWISE_CASES = {'1x1-go-gi-bias', '1x1-stride2', 'linear', 'linear-2d-input'}
#: Dense point-wise or dense 2-D layers.
IM2COL_CASES = {'3x3', '3x3-bias-stride2-gi', '3x3-dilated', '1x1-go-gi-bias', '1x1-stride2',
                'linear', 'linear-2d-input', 'b0.5-zero-cells', 'b0.25-zero-cells',
                'nonlocal-basis', 'b4'}
#: Dense 2-D layers, not point-wise (inference only).
TRANSPOSED_CASES = {'3x3', '3x3-bias-stride2-gi', '3x3-dilated', 'b0.5-zero-cells',
                    'b0.25-zero-cells', 'nonlocal-basis', 'b4'}
EXPECTED = {GROUPED: set(CASES), POINTWISE: POINTWISE_CASES, IM2COL: IM2COL_CASES,
            IM2COL_TRANSPOSED: TRANSPOSED_CASES}


def test_every_path_has_its_cases():
    """A new path cannot be added to the table without saying which layers it runs."""
    assert set(EXPECTED) == set(PATHS) == set(PATH_RULES)
    assert all(PATH_RULES[path].orders for path in PATHS)


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize('blocked', [False, True])
@pytest.mark.parametrize('path,order', ROUTES)
def test_fast_matches_reference(name, blocked, path, order):
    specs, manager_kwargs, in_shape = CASES[name]
    torch.manual_seed(0)
    net = build(specs, **manager_kwargs)
    layer = net.layers[0]
    geo = (layer.conv if isinstance(layer, KWLinear) else layer).geometry
    assert applies(path, geo, needs_grad=False) == (name in EXPECTED[path]), (name, path)
    if name not in EXPECTED[path]:
        return
    train = applies(path, geo, needs_grad=True)
    assert train == PATH_RULES[path].trains
    ran = []
    run = forced(path, order, blocked, ran)
    two_d = len(in_shape) == 3 and not isinstance(layer, KWLinear)
    for batch, channels_last, t in itertools.product((1, 3), (False, True), (0.0, 0.5, 1.0)):
        if channels_last and not two_d:
            continue
        set_temperature(net, t)
        x = torch.randn(batch, *in_shape)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _check(net, x, run, train)
    # the path under test really ran, with gradients unless it has no backward
    assert ran and any(ran) == train and not all(ran)


@pytest.mark.parametrize('frozen', ['cells', 'input'])
@pytest.mark.parametrize('path,order', [r for r in ROUTES if PATH_RULES[r[0]].trains])
def test_partial_gradients_match_reference(frozen, path, order):
    """With a frozen warehouse or an input without grad (the stem), every other gradient still
    matches the oracle (the backward's block buffers are sized for what it computes)."""
    ran = []
    run = forced(path, order, True, ran)
    specs, manager_kwargs, in_shape = CASES['b4']  # n > B * M at batch 1
    torch.manual_seed(0)
    net = build(specs, **manager_kwargs)
    set_temperature(net, 0.5)
    layer = net.layers[0]
    if frozen == 'cells':
        net.manager.weights[0].requires_grad_(False)
    for batch in (1, 3):
        x = torch.randn(batch, *in_shape, requires_grad=frozen != 'input')
        inputs = ([x] if frozen != 'input' else []) + [
            p for p in net.parameters() if p.requires_grad]
        grad_out = None
        results = {}
        for impl, fn in (('fast', run), ('reference', by_impl('reference'))):
            y = fn(layer, x)
            if grad_out is None:
                grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
            results[impl] = torch.autograd.grad(y, inputs, grad_out, allow_unused=True)
        for a, b in zip(results['fast'], results['reference']):
            assert (a is None) == (b is None)
            if b is not None:
                assert rel_err(a, b) < TOL
    assert bool(ran) == ('b4' in EXPECTED[path])


@pytest.mark.parametrize('num_rows,num_cells', [(72, 27), (72, 108), (9, 188), (8, 1000)])
def test_backward_scratch_never_outgrows_the_kernels(num_rows, num_cells):
    """The im2col backward's scratch holds a block's kernels or, a chunk of cell rows at a
    time, its warehouse gradient: never more than the kernels (or one cell row) need."""
    largest, cell_in = 48, 16
    size, chunk = fast_im2col.scratch_plan(largest, num_rows, num_cells, cell_in, True, True)
    assert size == max(largest * num_rows, num_cells) * cell_in
    assert 1 <= chunk <= largest and chunk * num_cells * cell_in <= size
    if num_cells <= num_rows:
        assert chunk == largest  # one product per block, as before chunking
    # without the column gradient the scratch is the warehouse gradient's chunk alone
    size, chunk = fast_im2col.scratch_plan(largest, num_rows, num_cells, cell_in, False, True)
    assert size == chunk * num_cells * cell_in
    assert fast_im2col.scratch_plan(largest, num_rows, num_cells, cell_in, False, False)[0] == 0


def test_im2col_routing():
    """By default the im2col path takes the late ResNet layers and the point-wise layers with
    no more output pixels than output channels, and leaves large maps, small cells and
    depth-wise layers to the grouped / batched paths."""
    torch.manual_seed(0)
    net = build([conv(512, 512), conv(256, 512, stride=2)])  # cells 512x256
    late, strided = net.layers[0].geometry, net.layers[1].geometry
    assert im2col_rule(late, (7, 7))[0]
    assert im2col_rule(strided, (14, 14))[0]  # 7x7 output
    assert not im2col_rule(late, (56, 56))[0]  # large map
    pointwise = build([conv(256, 1024, 1)]).layers[0].geometry
    assert im2col_rule(pointwise, (28, 28))[0]  # 784 <= 1024
    assert not im2col_rule(pointwise, (56, 56))[0]  # 3136 > 1024
    small_cells = build([conv(24, 144, 1), conv(8, 8, 1)]).layers[0].geometry  # 8-row cells
    assert not im2col_rule(small_cells, (7, 7))[0]
    depthwise = build([conv(512, 512, groups=512)]).layers[0].geometry
    assert not im2col_rule(depthwise, (7, 7))[0]


def test_row_blocks():
    """Blocks of aligned cell rows covering every row once, within the budget or about equal
    and rounded up to the alignment; grouped layers are one block."""
    torch.manual_seed(0)
    geo = build([conv(512, 512)]).layers[0].geometry
    row_bytes = 4 * geo.num_mixtures * geo.cell_in * 4
    assert row_blocks(geo, 4, 4, 10**12, True, 16) == [(0, 512)]
    blocks = row_blocks(geo, 4, 4, 100 * row_bytes, True, 16)
    assert blocks[0][0] == 0 and blocks[-1][1] == 512
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert all((b - a) % 16 == 0 and b - a <= 100 for a, b in blocks[:-1])
    geo = build([conv(64, 128), conv(64, 64)]).layers[0].geometry  # cells 64x64, go = 2
    row_bytes = 4 * geo.num_mixtures * geo.cell_in * 4
    assert row_blocks(geo, 4, 4, 10**9, False, 16) == [(0, 64)]
    # 24 rows fit: 3 blocks of 22 rows, rounded up to the alignment (16): 2 blocks of 32
    assert row_blocks(geo, 4, 4, 24 * row_bytes, False, 16) == [(0, 32), (32, 64)]
    assert row_blocks(geo, 4, 4, 16 * row_bytes, False, 16) == [
        (0, 16), (16, 32), (32, 48), (48, 64)]
    assert row_blocks(geo, 4, 4, 24 * row_bytes, False, 1) == [(0, 22), (22, 44), (44, 64)]
    depthwise = build([conv(16, 16, groups=16)]).layers[0].geometry
    assert row_blocks(depthwise, 64, 4, 1, False, 16) == [(0, 16)]


@pytest.mark.parametrize('path', [GROUPED, POINTWISE])
def test_saved_kernels_path(path):
    """A plan with ``save_kernels`` keeps the blocks' kernels for the backward instead of
    assembling them again."""
    name = '3x3' if path == GROUPED else '1x1-go-gi-bias'
    specs, manager_kwargs, in_shape = CASES[name]
    torch.manual_seed(0)
    net = build(specs, **manager_kwargs)
    set_temperature(net, 0.5)
    ran = []

    def saving(conv, x):
        cells, alpha = conv.cells, conv.attention(x)
        plan = plan_layer(conv.geometry, x.shape, cells.dtype, x.device,
                          needs_grad(x, alpha, cells), kw_impl=path)
        plan = dataclasses.replace(plan, blocks=two_blocks(plan), save_kernels=True)
        ran.append(plan.needs_grad)
        return run_plan(plan, x, alpha, cells, conv.bias)
    _check(net, torch.randn(3, *in_shape), saving)
    assert True in ran


def test_kw_conv_functional_matches_reference():
    """kw_conv on random attentions (not from an attention module), float64, tight."""
    torch.manual_seed(0)
    net = build([conv(16, 32), conv(16, 16, 1)])
    for layer in net.layers:
        geo = layer.geometry
        cells = layer.cells.detach().double()
        alpha = torch.randn(4, geo.num_mixtures, cells.shape[0], dtype=torch.float64)
        x = torch.randn(4, 16, 6, 6, dtype=torch.float64)
        bias = torch.randn(geo.out_channels, dtype=torch.float64)
        ref = kw_conv_reference(x, alpha, cells, bias, geo)
        for block_bytes in (None, 1):
            out = kw_conv(x, alpha, cells, bias, geo, block_bytes)
            assert rel_err(out, ref) < 1e-12


def test_frozen_cells_and_input_without_grad():
    """Frozen warehouses and inputs without grad (the stem) get no gradient, the rest does."""
    torch.manual_seed(0)
    net = build([conv(8, 8)])
    net.manager.weights[0].requires_grad_(False)
    layer = net.layers[0]
    x = torch.randn(2, 8, 5, 5)
    for impl in ('fast', 'reference'):
        with use_kw_impl(impl):
            y = layer(x)
        y.sum().backward()
    assert net.manager.weights[0].grad is None
    assert layer.attention.fc2.weight.grad is not None


def test_output_keeps_channels_last_for_pointwise_and_linear_is_contiguous():
    torch.manual_seed(0)
    net = build([conv(16, 8, 1)])
    x = torch.randn(2, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    assert net.layers[0](x).is_contiguous(memory_format=torch.channels_last)
    lin = build([dict(in_channels=12, out_channels=20, layer_type='linear', warehouse_name='w')])
    assert lin.layers[0](torch.randn(3, 7, 12)).is_contiguous()


def test_attention_fused_normalization_matches_reference():
    torch.manual_seed(0)
    for basis in (1.0, 1 / 16):
        att = KWAttention(32, 9, 40, nonlocal_basis_ratio=basis,
                          cell_num_ratio=1.0 if basis == 1.0 else 0.5, start_cell=3)
        att.assign_cells(3, 1.0)
        x = torch.randn(4, 32, 5, 5)
        for t in (0.0, 0.3, 1.0):
            att.temperature = t
            ref = kw_attention_reference(att.logits(x), att.beta, t)
            out = att(x)
            assert out.shape == (4, 9, 40) and out.is_contiguous()
            assert rel_err(out, ref) < TOL


def test_impl_switch():
    """A ``use_kw_impl`` block overrides the layers' own ``kw_impl``, blocks nest, and a path
    name forces that path through the layer's own forward."""
    torch.manual_seed(0)
    net = build([conv(16, 16), conv(16, 16)])
    layer = net.layers[0]
    assert get_kw_impl() == 'auto' and get_kw_impl(layer) == 'auto'
    with use_kw_impl('reference'):
        assert get_kw_impl(layer) == 'reference'
        with use_kw_impl('export'):
            assert get_kw_impl() == 'export'
        assert get_kw_impl() == 'reference'
    assert get_kw_impl() == 'auto'
    assert apply_kw_impl(net, 'im2col') is net
    assert get_kw_impl(layer) == 'im2col' and 'kw_impl=' in repr(layer)
    with use_kw_impl('fast'):
        assert get_kw_impl(layer) == 'fast'
    with pytest.raises(ValueError, match="got 'slow'"):
        use_kw_impl('slow')
    with pytest.raises(ValueError, match="got 'nope'"):
        apply_kw_impl(net, 'nope')
    with pytest.raises(ValueError, match="got 'nope'"):
        KWConvNd.__new__(KWConvNd).__init__(4, 4, 1, kw_impl='nope')
    # forced through the layer's forward: equal to the oracle on every path it applies to
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad(), use_kw_impl('reference'):
        ref = layer(x)
    for path in PATHS:
        apply_kw_impl(net, path)
        with torch.no_grad():
            assert rel_err(layer(x), ref) < TOL, path


def test_kw_layers_are_kwconv():
    net = build(CASES['linear'][0])
    assert isinstance(net.layers[0].conv, KWConvNd)


@pytest.mark.parametrize('path', PATHS)
def test_autocast_runs_in_the_autocast_dtype(path):
    """Under autocast the fast paths run in the autocast dtype, forward and backward."""
    torch.manual_seed(0)
    net = build(CASES['1x1-go-gi-bias'][0])
    layer = net.layers[0]
    x = torch.randn(3, 16, 5, 5, requires_grad=True)
    results = {}
    for impl in (path, 'reference'):
        with torch.autocast('cpu', dtype=torch.bfloat16), use_kw_impl(impl):
            y = layer(x)
        if impl == path:
            assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
        results[impl] = (y.float(), x.grad.clone(), net.manager.weights[0].grad.clone())
        x.grad = None
        net.zero_grad()
    for a, b in zip(results[path], results['reference']):
        assert rel_err(a, b) < 3e-2  # bfloat16
