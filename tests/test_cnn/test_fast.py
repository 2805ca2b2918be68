"""The fast KW paths (kw_mm.cnn.fast) against the straightforward oracle, forward and backward.

Every layer kind (3x3, 1x1, depth-wise, strided, 1-D, 3-D, KWLinear, bias, non-local basis,
b < 1 with zero cells), batch 1 and N, contiguous and channels_last inputs, t = 0, 0.5, 1, and
both the single-block and the blocked paths; outputs and the gradients of the input, the cells,
every attention parameter and the bias must agree with ``use_kw_impl('reference')`` to a
relative error below 1e-5.
"""
import itertools

import pytest
import torch
import torch.nn as nn

import kw_mm.cnn.fast as fast
import kw_mm.cnn.fast_im2col as fast_im2col
import kw_mm.cnn.fast_im2col_inference as fast_im2col_inference
from kw_mm.cnn import (KWAttention, KWConvNd, KWLinear, WarehouseManager, kw_conv_reference,
                       set_temperature)
import kw_mm.cnn.blocks as blocks_module
from kw_mm.cnn.blocks import plan_blocks
from kw_mm.cnn.fast import get_kw_impl, kw_conv, set_kw_impl, use_kw_impl
from kw_mm.cnn.functional import kw_attention_reference

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


def _run(layer, params, x, impl, grad_out):
    with use_kw_impl(impl):
        y = layer(x)
    grads = torch.autograd.grad(y, [x] + params, grad_out, allow_unused=True)
    return y.detach(), grads


def _check(net, x, batch_norm_mode='train'):
    layer, params = _layer_and_params(net)
    net.train(batch_norm_mode == 'train')
    x = x.detach().requires_grad_()
    with torch.no_grad(), use_kw_impl('reference'):
        shape = layer(x).shape
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    y_fast, g_fast = _run(layer, params, x, 'fast', grad_out)
    y_ref, g_ref = _run(layer, params, x, 'reference', grad_out)
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
        y_fast = layer(x)
        with use_kw_impl('reference'):
            y_ref = layer(x)
    assert rel_err(y_fast, y_ref) < TOL


def two_blocks(geo, batch, itemsize, device, block_bytes=None, path='grouped'):
    """Two blocks of cell rows (one for grouped layers, which are never blocked), on either
    fast path."""
    co = geo.cell_out
    if geo.groups > 1 or co < 2:
        return [(0, co)]
    return [(0, co // 2), (co // 2, co)]


def half_input_block(geo, batch, itemsize, device, block_bytes=None):
    """Two blocks of input channels on the transposed inference path (one if ci is odd)."""
    return geo.cell_in // 2 if geo.cell_in % 2 == 0 else geo.cell_in


def force_path(monkeypatch, path: str, blocked: bool) -> list:
    """Route every layer the im2col path can run to it (``'im2col'``: channel-major products,
    ``'im2col-pixel-major'``: pixel-major products, ``'im2col-transposed'``: pixel-major with
    gradients and the transposed inference path of
    :mod:`kw_mm.cnn.fast_im2col_inference` without) or to the grouped / batched paths
    (``'grouped'``); returns a list that records each call of the path under test."""
    calls = []
    if path.startswith('im2col'):
        monkeypatch.setattr(fast_im2col, 'MIN_CELL_OUT', 1)
        monkeypatch.setattr(fast_im2col, 'MAX_PIXELS_PER_CHANNEL', float('inf'))
        monkeypatch.setattr(fast_im2col, 'PIXEL_MAJOR_BELOW',
                            0 if path == 'im2col' else float('inf'))
    else:
        monkeypatch.setattr(fast_im2col, 'use_im2col', lambda geo, x: False)
    if path == 'im2col-transposed':
        monkeypatch.setattr(fast_im2col_inference, 'MIN_CELL_IN', 1)
        monkeypatch.setattr(fast_im2col_inference, 'MIN_BATCH', 1)
        monkeypatch.setattr(fast_im2col_inference, 'MAX_CELLS_PER_PIXEL', float('inf'))
    else:
        monkeypatch.setattr(fast_im2col_inference, 'uses_input_blocks', lambda *args: False)
    module = fast_im2col_inference if path == 'im2col-transposed' else fast_im2col
    original = module.forward

    def recording_forward(*args, **kwargs):
        calls.append(args[4])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, 'forward', recording_forward)
    if blocked:
        monkeypatch.setattr(fast, 'plan_blocks', two_blocks)
        monkeypatch.setattr(fast, 'plan_input_block', half_input_block)
    return calls


#: Cases the im2col path must run when forced (dense point-wise or dense 2-D).
IM2COL_CASES = {'3x3', '3x3-bias-stride2-gi', '3x3-dilated', '1x1-go-gi-bias', '1x1-stride2',
                'linear', 'linear-2d-input', 'b0.5-zero-cells', 'b0.25-zero-cells',
                'nonlocal-basis', 'b4'}
#: Cases the transposed inference path must run when forced (dense 2-D, not point-wise).
TRANSPOSED_CASES = {'3x3', '3x3-bias-stride2-gi', '3x3-dilated', 'b0.5-zero-cells',
                    'b0.25-zero-cells', 'nonlocal-basis', 'b4'}


@pytest.mark.parametrize('name', sorted(CASES))
@pytest.mark.parametrize('blocked', [False, True])
@pytest.mark.parametrize('path', ['grouped', 'im2col', 'im2col-pixel-major', 'im2col-transposed'])
def test_fast_matches_reference(name, blocked, path, monkeypatch):
    specs, manager_kwargs, in_shape = CASES[name]
    calls = force_path(monkeypatch, path, blocked)
    torch.manual_seed(0)
    net = build(specs, **manager_kwargs)
    two_d = len(in_shape) == 3 and not isinstance(net.layers[0], KWLinear)
    for batch, channels_last, t in itertools.product((1, 3), (False, True), (0.0, 0.5, 1.0)):
        if channels_last and not two_d:
            continue
        set_temperature(net, t)
        x = torch.randn(batch, *in_shape)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _check(net, x)
    # the path under test really ran (the eval checks call the direct forward)
    expected = name in (TRANSPOSED_CASES if path == 'im2col-transposed' else
                        IM2COL_CASES if path.startswith('im2col') else ())
    assert bool(calls) == expected, (name, path, len(calls))


@pytest.mark.parametrize('frozen', ['cells', 'input'])
@pytest.mark.parametrize('path', ['grouped', 'im2col', 'im2col-pixel-major'])
def test_partial_gradients_match_reference(frozen, path, monkeypatch):
    """With a frozen warehouse or an input without grad (the stem), every other gradient still
    matches the oracle (the backward's block buffers are sized for what it computes)."""
    calls = force_path(monkeypatch, path, blocked=True)
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
        for impl in ('fast', 'reference'):
            with use_kw_impl(impl):
                y = layer(x)
            if grad_out is None:
                grad_out = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
            results[impl] = torch.autograd.grad(y, inputs, grad_out, allow_unused=True)
        for a, b in zip(results['fast'], results['reference']):
            assert (a is None) == (b is None)
            if b is not None:
                assert rel_err(a, b) < TOL
    assert bool(calls) == path.startswith('im2col')


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
    assert fast_im2col.use_im2col(late, torch.empty(1, 512, 7, 7))
    assert fast_im2col.use_im2col(strided, torch.empty(1, 256, 14, 14))  # 7x7 output
    assert not fast_im2col.use_im2col(late, torch.empty(1, 512, 56, 56))  # large map
    pointwise = build([conv(256, 1024, 1)]).layers[0].geometry
    assert fast_im2col.use_im2col(pointwise, torch.empty(1, 256, 28, 28))  # 784 <= 1024
    assert not fast_im2col.use_im2col(pointwise, torch.empty(1, 256, 56, 56))  # 3136 > 1024
    small_cells = build([conv(24, 144, 1), conv(8, 8, 1)]).layers[0].geometry  # 8-row cells
    assert not fast_im2col.use_im2col(small_cells, torch.empty(1, 24, 7, 7))
    depthwise = build([conv(512, 512, groups=512)]).layers[0].geometry
    assert not fast_im2col.use_im2col(depthwise, torch.empty(1, 512, 7, 7))


def test_plan_row_blocks():
    """Row blocks of the im2col path: aligned, covering every row once, one block off the CPU."""
    torch.manual_seed(0)
    geo = build([conv(512, 512)]).layers[0].geometry
    row_bytes = 4 * geo.num_mixtures * geo.cell_in * 4
    cpu = torch.device('cpu')
    assert plan_blocks(geo, 4, 4, cpu, 10**12, path='im2col') == [(0, 512)]
    blocks = plan_blocks(geo, 4, 4, cpu, 100 * row_bytes, path='im2col')
    assert blocks[0][0] == 0 and blocks[-1][1] == 512
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert all((b - a) % 16 == 0 and b - a <= 100 for a, b in blocks[:-1])
    assert plan_blocks(geo, 4, 4, torch.device('meta'), path='im2col') == [(0, 512)]


def test_plan_blocks(monkeypatch):
    """Blocks of aligned cell rows covering every row once; one block off the CPU."""
    torch.manual_seed(0)
    net = build([conv(64, 128), conv(64, 64)])
    geo = net.layers[0].geometry  # cells 64x64, go = 2
    assert plan_blocks(geo, 4, 4, torch.device('cpu'), 10**9) == [(0, 64)]
    row_bytes = 4 * geo.num_mixtures * geo.cell_in * 4
    # 24 rows fit: 3 blocks of 22 rows, rounded up to the alignment (16): 2 blocks of 32
    assert plan_blocks(geo, 4, 4, torch.device('cpu'), 24 * row_bytes) == [(0, 32), (32, 64)]
    assert plan_blocks(geo, 4, 4, torch.device('cpu'), 16 * row_bytes) == [
        (0, 16), (16, 32), (32, 48), (48, 64)]
    monkeypatch.setattr(blocks_module, 'ROW_ALIGN', 1)
    assert plan_blocks(geo, 4, 4, torch.device('cpu'), 24 * row_bytes) == [
        (0, 22), (22, 44), (44, 64)]
    assert plan_blocks(geo, 4, 4, torch.device('meta'), None) == [(0, 64)]
    depthwise = build([conv(16, 16, groups=16)]).layers[0].geometry
    assert plan_blocks(depthwise, 64, 4, torch.device('cpu'), 1) == [(0, 16)]


def test_saved_kernels_path(monkeypatch):
    """SAVE_KERNELS keeps the blocks' kernels for the backward instead of re-assembling."""
    monkeypatch.setattr(fast, 'SAVE_KERNELS', True)
    monkeypatch.setattr(fast, 'plan_blocks', two_blocks)
    for name in ('3x3', '1x1-go-gi-bias'):
        specs, manager_kwargs, in_shape = CASES[name]
        torch.manual_seed(0)
        net = build(specs, **manager_kwargs)
        set_temperature(net, 0.5)
        _check(net, torch.randn(3, *in_shape))


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
    assert get_kw_impl() == 'fast'
    with use_kw_impl('reference'):
        assert get_kw_impl() == 'reference'
    assert get_kw_impl() == 'fast'
    with pytest.raises(ValueError, match="got 'slow'"):
        set_kw_impl('slow')
    with pytest.raises(ValueError, match='fast'):
        use_kw_impl('nope')


def test_kw_layers_are_kwconv():
    net = build(CASES['linear'][0])
    assert isinstance(net.layers[0].conv, KWConvNd)


@pytest.mark.parametrize('path', ['grouped', 'im2col'])
def test_autocast_runs_in_the_autocast_dtype(path, monkeypatch):
    """Under autocast the fast paths run in the autocast dtype, forward and backward."""
    calls = force_path(monkeypatch, path, blocked=False)
    torch.manual_seed(0)
    net = build(CASES['1x1-go-gi-bias'][0])
    layer = net.layers[0]
    x = torch.randn(3, 16, 5, 5, requires_grad=True)
    results = {}
    for impl in ('fast', 'reference'):
        with torch.autocast('cpu', dtype=torch.bfloat16), use_kw_impl(impl):
            y = layer(x)
        if impl == 'fast':
            assert y.dtype == torch.bfloat16
        y.float().square().sum().backward()
        results[impl] = (y.float(), x.grad.clone(), net.manager.weights[0].grad.clone())
        x.grad = None
        net.zero_grad()
    for a, b in zip(results['fast'], results['reference']):
        assert rel_err(a, b) < 3e-2  # bfloat16
    assert bool(calls) == (path == 'im2col')
