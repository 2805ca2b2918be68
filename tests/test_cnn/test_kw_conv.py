"""The KW layers on their own (kw_mm.cnn): KWConv1d/2d/3d and KWLinear against an independent
per-sample oracle, warehouse construction from a list of layers, the temperature as runtime state,
and the bad arguments of the warehouse manager.

The oracle below is written from the paper (Sec. 3) and shares no code with kw_mm: SE attention with
explicit BatchNorm arithmetic, CAF with the zero cell, the temperature mix, each kernel filled
cell by cell in the mixture order ``j = (s * go + o) * gi + i`` and every sample convolved on
its own.
"""
import glob
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kw_mm import get_temperature, set_temperature
from kw_mm.cnn import KWConv1d, KWConv2d, KWConv3d, KWConvNd, KWLinear, WarehouseManager
from tests.helpers.kw_oracle import assemble_kernel, kw_alpha

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
KW_MM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'kw_mm')


def oracle(layer: KWConvNd, x: torch.Tensor, t: float) -> torch.Tensor:
    """Output of one KW convolution in eval mode, computed sample by sample."""
    att = layer.attention
    assert not att.use_basis
    alpha, _ = kw_alpha(att, x, t)
    cells = layer.cells
    cout, cin_g = layer.out_channels, layer.in_channels // layer.groups
    assert math.prod(layer.kernel_size) * cout // cells.shape[1] * cin_g // cells.shape[2] == \
        att.num_mixtures
    outs = []
    for b in range(x.shape[0]):
        weight = assemble_kernel(alpha[b], cells, cout, cin_g)
        weight = weight.reshape(cout, cin_g, *layer.kernel_size)
        outs.append(CONV[layer.dim](x[b:b + 1], weight, layer.bias, layer.stride, layer.padding,
                                    layer.dilation, layer.groups))
    return torch.cat(outs)


class Net(nn.Module):
    """A warehouse manager and the KW layers of ``specs`` (``reserve`` keyword arguments)."""

    def __init__(self, specs, **manager_kwargs) -> None:
        super().__init__()
        self.manager = WarehouseManager(**manager_kwargs)
        self.layers = nn.ModuleList([self.manager.reserve(**spec) for spec in specs])
        self.manager.store()
        self.manager.allocate(self)


def randomize(net: nn.Module, seed: int = 0) -> None:
    """Input-dependent attentions and non-trivial norm statistics and biases."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
            if name.endswith('beta') or not tensor.is_floating_point():
                continue
            if name.endswith(('running_var', 'norm1.weight')):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen, dtype=tensor.dtype))
            elif 'manager.weights' not in name:
                tensor.copy_(torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype))


def spec(cin, cout, k, layer_type, **kwargs):
    return dict(in_channels=cin, out_channels=cout, kernel_size=k, layer_type=layer_type,
                warehouse_name='w', **kwargs)


# name -> (layer specs sharing one warehouse; the first is tested), manager kwargs, input shape
CASES = {
    'conv1d-stride-bias-b2': ([spec(8, 12, 3, 'conv1d', stride=2, padding=1, bias=True),
                               spec(4, 8, 1, 'conv1d')], dict(cell_num_ratio=2), (8, 9)),
    'conv2d-grouped-dilated': ([spec(8, 8, 3, 'conv2d', padding=2, dilation=2, groups=2),
                                spec(4, 8, 1, 'conv2d')], {}, (8, 7, 7)),
    'conv2d-b0.5-half-cells': ([spec(8, 16, 3, 'conv2d', padding=1, bias=True)],
                               dict(cell_num_ratio=0.5, cell_inplane_ratio=0.5,
                                    cell_outplane_ratio=0.5), (8, 5, 5)),
    'conv3d-anisotropic': ([spec(4, 8, (1, 3, 3), 'conv3d', padding=(0, 1, 1), bias=True),
                            spec(8, 4, 1, 'conv3d')], {}, (4, 3, 5, 5)),
}


@pytest.mark.parametrize('impl', ['fast', 'reference', 'export'])
@pytest.mark.parametrize('t', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('name', sorted(CASES))
def test_kw_conv_matches_independent_oracle(name, t, impl):
    from kw_mm.cnn import use_kw_impl
    specs, kwargs, shape = CASES[name]
    torch.manual_seed(0)
    net = Net(specs, **kwargs).double().eval()
    randomize(net)
    layer = net.layers[0]
    assert isinstance(layer, {1: KWConv1d, 2: KWConv2d, 3: KWConv3d}[layer.dim])
    set_temperature(net, t)
    x = torch.randn(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), use_kw_impl(impl):
        ours = layer(x)
    expected = oracle(layer, x, t)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    # Below t = 1 every sample gets its own mixture (the attention depends on the input).
    with torch.no_grad():
        alpha = layer.attention(x)
    assert torch.allclose(alpha[0], alpha[1]) == (t == 1.0)


@pytest.mark.parametrize('impl', ['fast', 'export'])
@pytest.mark.parametrize('t', [0.0, 0.5, 1.0])
def test_kw_linear_matches_independent_oracle(t, impl):
    """KWLinear is a KW 1-D convolution of kernel size 1 over the tokens of each sample."""
    from kw_mm.cnn import use_kw_impl
    torch.manual_seed(0)
    net = Net([dict(in_channels=12, out_channels=20, layer_type='linear', warehouse_name='w'),
               dict(in_channels=8, out_channels=4, layer_type='linear', warehouse_name='w')]
              ).double().eval()
    randomize(net)
    linear = net.layers[0]
    assert isinstance(linear, KWLinear)
    set_temperature(net, t)
    gen = torch.Generator().manual_seed(1)
    vectors = torch.randn(3, 12, dtype=torch.float64, generator=gen)  # [B, C]
    tokens = torch.randn(3, 5, 12, dtype=torch.float64, generator=gen)  # [B, T, C]
    with torch.no_grad(), use_kw_impl(impl):
        out_vectors, out_tokens = linear(vectors), linear(tokens)
    expected = oracle(linear.conv, vectors[:, :, None], t)[:, :, 0]
    torch.testing.assert_close(out_vectors, expected, rtol=1e-10, atol=1e-10)
    expected = oracle(linear.conv, tokens.transpose(1, 2), t).transpose(1, 2)
    torch.testing.assert_close(out_tokens, expected, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- warehouses
def test_warehouse_layout_from_a_list_of_layers():
    """Cell size = gcd of the members' channels x the cell ratios, m = sum of M, n = int(m b);
    beta hands the cells out one-to-one in module order; the init is Kaiming fan-out per
    layer slice."""
    net = Net([spec(16, 32, 3, 'conv2d', padding=1),  # M = 9 * 2 * 1 = 18
               spec(32, 48, 1, 'conv2d'),  # M = 1 * 3 * 2 = 6
               dict(in_channels=8, out_channels=8, kernel_size=3, warehouse_name='v')],
              cell_num_ratio=dict(w=2.0, v=4.0))
    w, v = net.manager.specs
    assert (w.cell_shape, w.num_mixtures, w.num_cells) == ((16, 16, 1, 1), 24, 48)
    assert (v.cell_shape, v.num_mixtures, v.num_cells) == ((8, 8, 1, 1), 9, 36)
    assert [tuple(c.shape) for c in net.manager.weights] == [(48, 16, 16, 1, 1), (36, 8, 8, 1, 1)]
    # b = 2: mixture j of a layer takes cell start + 2 j; the second layer starts at 36.
    first, second = (layer.attention for layer in net.layers[:2])
    assert first.beta[:, :-1].argmax(1).tolist() == list(range(0, 36, 2))
    assert second.start_cell == 36
    assert second.beta[:, :-1].argmax(1).tolist() == list(range(36, 48, 2))
    assert first.beta.sum(1).eq(1).all() and second.beta.sum(1).eq(1).all()
    # Each layer's slice of cells gets Kaiming fan-out seen as [-1, ci, 1, 1] (at b = 1 the
    # plain conv's scale): the 3x3 layer's 36 cells of 16 x 16 -> std sqrt(2 / (36 * 16)).
    cells = net.manager.weights[0][:36]
    assert abs(cells.std().item() / math.sqrt(2 / (36 * 16)) - 1) < 0.1


def test_temperature_is_runtime_state_not_saved():
    """set_temperature reaches every KW attention of a wrapped model; neither t nor beta is in
    the state dict, so a loaded model keeps its own (t = 0 when built)."""
    net = Net([spec(8, 8, 3, 'conv2d', padding=1), spec(8, 8, 3, 'conv2d', padding=1)])
    wrapped = nn.DataParallel(net)  # a model wrapper, as DDP: the layers sit under .module
    assert set_temperature(wrapped, 0.7) == 2
    assert get_temperature(wrapped) == get_temperature(net) == 0.7
    state = net.state_dict()
    assert not any('beta' in k or 'temperature' in k for k in state)
    fresh = Net([spec(8, 8, 3, 'conv2d', padding=1), spec(8, 8, 3, 'conv2d', padding=1)])
    fresh.load_state_dict(state, strict=True)
    assert get_temperature(fresh) == 0.0
    for a, b in zip(fresh.modules(), net.modules()):
        if hasattr(a, 'beta'):
            assert torch.equal(a.beta, b.beta)  # rebuilt by the one-to-one rule, not loaded
    with pytest.raises(ValueError, match=r'has no KernelWarehouse layer'):
        get_temperature(nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize('kwargs, specs, match', [
    # gcd 16 x ratio 2 = 32 input channels per cell: does not divide the 16-channel layers
    (dict(cell_inplane_ratio=2), [spec(16, 16, 3, 'conv2d')],
     r"warehouse 'w': cell size \[16, 32\] \(gcd \[16, 16\] x ratios \[1.0, 2.0\]\) cannot "
     r'divide a layer of kernel shape \[16, 16, 3, 3\]'),
    # gcd 3 x ratio 0.5 = 1.5 channels: refused, not truncated to 1
    (dict(cell_inplane_ratio=0.5), [spec(3, 16, 3, 'conv2d')],
     r"warehouse 'w': cell_inplane_ratio 0.5 x gcd 3 = 1.5 input channels per cell is not a "
     r'whole number'),
    (dict(cell_outplane_ratio=0.25), [spec(16, 10, 1, 'conv2d')],
     r"warehouse 'w': cell_outplane_ratio 0.25 x gcd 10 = 2.5 output channels per cell is not "
     r'a whole number'),
    (dict(cell_num_ratio=0), [spec(8, 8, 1, 'conv2d')],
     r"cell_num_ratio \(budget b\) must be > 0, got 0.0 for 'w'"),
    (dict(cell_num_ratio=[1, 2]), [spec(8, 8, 1, 'conv2d')],
     r"cell_num_ratio has 2 values for 1 warehouses \['w'\]"),
    (dict(cell_num_ratio=dict(v=1)), [spec(8, 8, 1, 'conv2d')],
     r"cell_num_ratio \{'v': 1\} has no entry for warehouse 'w'"),
    (dict(norm='GN'), [], r"norm must be one of \['BN', 'LN'\], got 'GN'"),
])
def test_bad_warehouse_arguments_name_the_value(kwargs, specs, match):
    with pytest.raises((ValueError, KeyError), match=match):
        Net(specs, **kwargs)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match=r'in_channels \(6\) and out_channels \(8\) must be '
                       r'divisible by groups \(4\)'):
        WarehouseManager().reserve(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match=r"layer_type must be one of \['conv1d', 'conv2d', "
                       r"'conv3d', 'linear'\], got 'conv4d'"):
        WarehouseManager().reserve(8, 8, 3, layer_type='conv4d')
    with pytest.raises(ValueError, match=r'kernel_size must be an int or 2 ints, got \(3, 3, 3\)'):
        WarehouseManager().reserve(8, 8, (3, 3, 3))
    layer = WarehouseManager().reserve(8, 8, 3)
    with pytest.raises(RuntimeError, match='not allocated'):
        layer(torch.randn(1, 8, 5, 5))


@pytest.mark.slow  # starts a subprocess
def test_kw_mm_works_without_mmdet():
    """kw_mm's layers, models and hooks import nothing from mmdet: with mmdet unimportable
    (mmpretrain imports it only if it is installed), kw_mm imports and builds a KW backbone."""
    code = ("import sys; sys.modules['mmdet'] = None\n"  # any `import mmdet` now fails
            'import kw_mm, kw_mm.cnn, kw_mm.models, kw_mm.engine\n'
            'from mmpretrain.registry import MODELS\n'
            "print(type(MODELS.build(dict(type='kw_mm.KWResNet', depth=18))).__name__)")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == 'KWResNet'
    for path in glob.glob(os.path.join(KW_MM_DIR, '**', '*.py'), recursive=True):
        source = open(path).read()
        assert not re.search(r'^\s*(import|from)\s+mmdet\b', source, re.M), path
