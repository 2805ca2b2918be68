"""The ablation knobs of the KW layers (paper Tables 5-9 and 13) against independent oracles.

Everything the layers are checked with is written here from the paper's formulas and shares no
code with kw_mm: the four attention functions (Table 8), the initialization ``beta`` of every
strategy (Tables 9 and 13), whole-kernel mixing without kernel partition (Table 5) and mixtures
that draw only on their own cells (Table 6, "without sharing"), each through a per-sample
convolution whose kernel is filled cell by cell.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kw_mm import set_temperature
from kw_mm.cnn import KWConv2d, WarehouseManager, use_kw_impl

#: The attention functions of Table 8, written from the paper: z over a mixture's n + 1 logits.
ORACLE_FUNCTIONS = {
    'caf': lambda z: z / (z.abs().sum(-1, keepdim=True) + 1e-3),
    'softmax': lambda z: z.exp() / z.exp().sum(-1, keepdim=True),
    'sigmoid': lambda z: 1.0 / (1.0 + (-z).exp()),
    'relu-l1': lambda z: torch.where(z > 0, z, torch.zeros_like(z)) / (z.abs().sum(-1, keepdim=True)
                                                                       + 1e-3),
}


class Net(nn.Module):
    """A warehouse manager and the 3x3 / 1x1 KW convolutions of ``channels`` in one warehouse."""

    def __init__(self, layers, **manager_kwargs) -> None:
        super().__init__()
        self.manager = WarehouseManager(**manager_kwargs)
        self.layers = nn.ModuleList([
            self.manager.reserve(cin, cout, k, padding=k // 2, bias=True, warehouse_name='w')
            for cin, cout, k in layers])
        self.manager.store()
        self.manager.allocate(self)


def build(layers=((8, 8, 3), (8, 16, 3), (8, 16, 1)), seed=0, **kwargs) -> Net:
    """The network in eval mode with input-dependent attentions and non-trivial statistics."""
    torch.manual_seed(seed)
    net = Net(layers, **kwargs).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
            if not tensor.is_floating_point() or name.endswith('beta'):
                continue
            if name.endswith(('running_var', 'norm1.weight')):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen, dtype=tensor.dtype))
            elif 'manager.weights' not in name:
                tensor.copy_(torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype))
    return net


def oracle_logits(conv: KWConv2d, x: torch.Tensor) -> torch.Tensor:
    """SE attention in eval mode: pool, fc1, BatchNorm, ReLU, fc2 -> ``[B, fc2_out]``."""
    att = conv.attention
    h = x.mean(dim=(2, 3)) @ att.fc1.weight.t()
    bn = att.norm1
    h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return torch.relu(h) @ att.fc2.weight.t() + att.fc2.bias


def oracle_conv(conv: KWConv2d, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Every sample convolved with its own kernel ``alpha[b] @ cells``.

    ``alpha`` is ``[B, M, n]`` in the mixture order ``j = (s * go + o) * gi + i``: mixture ``j``
    is the cell at spatial position ``s``, output block ``o`` and input block ``i``.
    """
    cells = conv.cells.reshape(conv.cells.shape[0], *conv.cells.shape[1:3])
    co, ci = cells.shape[1:]
    cout, cin = conv.out_channels, conv.in_channels
    go, gi, kh, kw = cout // co, cin // ci, *conv.kernel_size
    mixed = torch.einsum('bjk,kpq->bjpq', alpha, cells)  # every mixture's cell
    outs = []
    for b in range(x.shape[0]):
        blocks = mixed[b].reshape(kh, kw, go, gi, co, ci)
        rows = [torch.cat([torch.stack([torch.stack([blocks[r, c, o, i] for c in range(kw)], -1)
                                        for r in range(kh)], -2) for i in range(gi)], dim=1)
                for o in range(go)]
        weight = torch.cat(rows, dim=0)  # [Cout, Cin, kh, kw]
        outs.append(F.conv2d(x[b:b + 1], weight, conv.bias, conv.stride, conv.padding))
    return torch.cat(outs)


def check_both_impls(conv: KWConv2d, x: torch.Tensor, expected: torch.Tensor) -> None:
    for impl in ('fast', 'reference'):
        with use_kw_impl(impl), torch.no_grad():
            torch.testing.assert_close(conv(x), expected, rtol=1e-9, atol=1e-9, msg=impl)


# ------------------------------------------------------------------ attention functions
@pytest.mark.parametrize('t', [0.0, 0.4])
@pytest.mark.parametrize('function', sorted(ORACLE_FUNCTIONS))
def test_attention_function_matches_its_formula(function, t):
    net = build(attention_function=function)
    set_temperature(net, t)
    x = torch.randn(3, 8, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for conv in net.layers:
        m, n = conv.attention.num_mixtures, conv.attention.num_cells
        z = oracle_logits(conv, x).reshape(3, m, n + 1)
        a = (1 - t) * ORACLE_FUNCTIONS[function](z) + t * conv.attention.beta
        check_both_impls(conv, x, oracle_conv(conv, x, a[..., :n]))


def test_attention_functions_differ_and_keep_the_parameter_count():
    """The functions change only the normalization: same parameters, different outputs."""
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    outs, counts = {}, set()
    for function in ORACLE_FUNCTIONS:
        net = build(attention_function=function)
        counts.add(sum(p.numel() for p in net.parameters()))
        with torch.no_grad():
            outs[function] = net.layers[0](x)
    assert len(counts) == 1
    names = sorted(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outs[a], outs[b]), (a, b)


def test_relu_l1_attentions_are_never_negative_and_caf_ones_are():
    net_relu, net_caf = build(attention_function='relu-l1'), build(attention_function='caf')
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert (net_relu.layers[0].attention(x) >= 0).all()
        assert (net_caf.layers[0].attention(x) < 0).any()


# ------------------------------------------------------------------ initialization strategies
def oracle_beta(strategy: str, layer_mixtures, n: int, b: float):
    """beta ``[M, n + 1]`` of every layer of one warehouse, from the paper's descriptions."""
    betas, start = [], 0
    for m in layer_mixtures:
        beta = torch.zeros(m, n + 1)
        if strategy == 'all-to-one':
            beta[:, :n] = 1
        for j in range(m):
            if strategy == 'one-to-one' and b >= 1:
                beta[j, start + j * int(b)] = 1
            elif strategy == 'many-to-one':  # int(b) cells to every mixture, none repeated
                beta[j, start + j * int(b):start + (j + 1) * int(b)] = 1
            elif strategy == 'one-to-many':  # one cell to every 1/b mixtures
                beta[j, start + j // int(1 / b)] = 1
        betas.append(beta)
        start += m * int(b) if b >= 1 else m // int(1 / b)
    return betas


@pytest.mark.parametrize('strategy,b', [('one-to-one', 1), ('one-to-one', 4), ('all-to-one', 1),
                                        ('none', 1), ('many-to-one', 4), ('many-to-one', 2),
                                        ('one-to-many', 0.5)])
def test_init_strategy_beta(strategy, b):
    ratio = 0.5 if b < 1 else 1.0
    net = build(init_strategy=strategy, cell_num_ratio=b, cell_inplane_ratio=ratio,
                cell_outplane_ratio=ratio)
    mixtures = [conv.attention.num_mixtures for conv in net.layers]
    n = net.layers[0].attention.num_cells
    assert n == int(sum(mixtures) * b)
    for conv, expected in zip(net.layers, oracle_beta(strategy, mixtures, n, b)):
        torch.testing.assert_close(conv.attention.beta.float(), expected)


@pytest.mark.parametrize('strategy,b', [('all-to-one', 1), ('many-to-one', 4),
                                        ('one-to-many', 0.5)])
def test_init_strategy_at_t1_assembles_the_beta_kernels(strategy, b):
    """At t = 1 every mixture is exactly its beta: the sum of the cells handed to it."""
    ratio = 0.5 if b < 1 else 1.0
    net = build(init_strategy=strategy, cell_num_ratio=b, cell_inplane_ratio=ratio,
                cell_outplane_ratio=ratio)
    set_temperature(net, 1.0)
    mixtures = [conv.attention.num_mixtures for conv in net.layers]
    n = net.layers[0].attention.num_cells
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    for conv, beta in zip(net.layers, oracle_beta(strategy, mixtures, n, b)):
        alpha = beta[None, :, :n].double().expand(2, -1, -1)
        check_both_impls(conv, x, oracle_conv(conv, x, alpha))


def test_init_none_ignores_the_temperature():
    net = build(init_strategy='none')
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    conv = net.layers[1]
    m, n = conv.attention.num_mixtures, conv.attention.num_cells
    expected = oracle_conv(conv, x, ORACLE_FUNCTIONS['caf'](
        oracle_logits(conv, x).reshape(2, m, n + 1))[..., :n])
    for t in (0.0, 0.7, 1.0):
        set_temperature(net, t)
        check_both_impls(conv, x, expected)


@pytest.mark.parametrize('kwargs,message', [
    (dict(attention_function='tanh'),
     r"attention_function must be one of \['caf', 'softmax', 'sigmoid', 'relu-l1'\], got 'tanh'"),
    (dict(init_strategy='random'),
     r"init_strategy must be one of \['one-to-one', 'all-to-one', 'many-to-one', 'one-to-many', "
     r"'none'\], got 'random'"),
    (dict(init_strategy='many-to-one'),
     r"init_strategy 'many-to-one' gives every mixture int\(b\) cells and needs a budget b >= 2, "
     r'got b=1'),
    (dict(init_strategy='one-to-many', cell_num_ratio=2),
     r"init_strategy 'one-to-many' hands one cell to int\(1 / b\) mixtures and needs a budget "
     r'b < 1, got b=2'),
    (dict(partition=False, share_cells=False),
     r'partition=False and share_cells=False cannot be combined'),
])
def test_bad_knobs_fail_with_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        build(**kwargs)
    assert '\n' not in str(err.value)


# ------------------------------------------------------------------ partition and sharing
def test_no_partition_mixes_whole_kernels():
    """partition=False: one attention per layer over whole kernels of one shape (Table 5)."""
    layers = ((8, 8, 3), (8, 8, 3), (8, 16, 3), (8, 16, 1))
    net = build(layers, partition=False)
    rows = net.manager.summary()
    # same-shape layers share; the cells are whole kernels stored as 1-in-space slices
    assert [(r['cell_shape'][:2], r['m'], r['n'], r['num_layers']) for r in rows] == [
        ([8, 8], 18, 18, 2), ([16, 8], 9, 9, 1), ([16, 8], 1, 1, 1)]
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    for t in (0.0, 0.6):
        set_temperature(net, t)
        for index, conv in enumerate(net.layers):
            att = conv.attention
            kernels = att.num_cells // att.num_mixtures
            assert att.fc2.out_features == kernels + 1  # one mixture: a whole kernel's weights
            a = ORACLE_FUNCTIONS['caf'](oracle_logits(conv, x).reshape(2, 1, kernels + 1))
            a = ((1 - t) * a + t * att.beta)[:, 0, :kernels]
            # whole kernel k = cells k * M .. k * M + M - 1 (its spatial positions)
            cells = conv.cells.reshape(kernels, att.num_mixtures, *conv.cells.shape[1:3])
            weight = torch.einsum('bk,ksoi->bois', a, cells).reshape(
                2, conv.out_channels, conv.in_channels, *conv.kernel_size)
            expected = torch.cat([F.conv2d(x[b:b + 1], weight[b], conv.bias, padding=conv.padding)
                                  for b in range(2)])
            check_both_impls(conv, x, expected)
    # t = 1: the second 3x3 layer is exactly its own (second) whole kernel
    set_temperature(net, 1.0)
    conv = net.layers[1]
    kernel = conv.cells.reshape(2, 9, 8, 8)[1].permute(1, 2, 0).reshape(8, 8, 3, 3)
    check_both_impls(conv, x, F.conv2d(x, kernel, conv.bias, padding=1))


def test_without_sharing_every_mixture_mixes_only_its_own_cell():
    """share_cells=False: mixture j of a layer sees only its own cell (Table 6)."""
    net = build(share_cells=False)
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    start = 0
    for conv in net.layers:
        att = conv.attention
        m, n = att.num_mixtures, att.num_cells
        assert att.fc2.out_features == 2 * m  # own cell + zero cell per mixture
        a = ORACLE_FUNCTIONS['caf'](oracle_logits(conv, x).reshape(2, m, 2))[..., 0]
        alpha = torch.zeros(2, m, n, dtype=torch.float64)
        for j in range(m):
            alpha[:, j, start + j] = a[:, j]
        check_both_impls(conv, x, oracle_conv(conv, x, alpha))
        start += m


def test_default_knobs_are_the_paper_setting():
    manager = WarehouseManager()
    assert (manager.attention_function, manager.init_strategy, manager.partition,
            manager.cell_access) == ('caf', 'one-to-one', True, 'shared')


def test_no_partition_refuses_cell_ratios():
    with pytest.raises(ValueError, match=r"warehouse 'w_8x8x3x3': partition=False makes a cell a "
                       r'whole kernel, so the cell ratios must be 1, got cell_outplane_ratio=0.5'):
        build(((8, 8, 3), ), partition=False, cell_outplane_ratio=0.5)
