"""Mixed precision of the dynamic convolutions' attentions (kw_mm.cnn.precision).

Under ``torch.autocast`` (bfloat16 on the CPU) every attention (KW, KW*'s heads, DY-Conv,
ODConv, CondConv) must compute exactly what its float32 computation on the same input values
gives, forward and backward (relative error < 1e-5: nothing in it ran in half precision), and
return float32, while the layer's own product stays in bfloat16. Outside autocast an attention
runs in its parameters' dtype (a model cast to bfloat16 stays in bfloat16).
"""
import pytest
import torch
import torch.nn as nn

from kw_mm.cnn import KWAttention, WarehouseManager, set_temperature, use_kw_impl
from kw_mm.cnn.dynamic import CondConv2d, CondConvRouter, DyConv2d, ODConv2d
from kw_mm.cnn.kw_star import KWStarAttention
from kw_mm.cnn.precision import split_attentions

TOL = 1e-5
BF16 = torch.bfloat16


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item()
    diff = (a.float() - b.float()).abs().max().item()
    return diff / scale if scale > 0 else diff


def randomize_norms(module: nn.Module) -> None:
    """Non-trivial norm parameters and running statistics (eval uses them)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


def kw_attention(**kwargs) -> KWAttention:
    att = KWAttention(32, 9, 40, **kwargs)
    att.assign_cells(3, kwargs.get('cell_num_ratio', 1.0))
    return att


#: name -> (attention module factory, input shape)
ATTENTIONS = {
    'kw': (lambda: kw_attention(), (4, 32, 6, 6)),
    'kw-ln': (lambda: kw_attention(norm='LN'), (4, 32, 6, 6)),
    'kw-basis': (lambda: kw_attention(nonlocal_basis_ratio=1 / 16, cell_num_ratio=0.5,
                                      start_cell=3), (4, 32, 6, 6)),
    'kw-softmax': (lambda: kw_attention(attention_function='softmax'), (4, 32, 6, 6)),
    'kw-tokens': (lambda: kw_attention(), (4, 32, 7)),
    'kw-pooled': (lambda: kw_attention(), (4, 32)),
    'dyconv': (lambda: DyConv2d(32, 16, 3, padding=1, attention_function='caf').attention,
               (4, 32, 6, 6)),
    'odconv': (lambda: ODConv2d(32, 16, 3, padding=1).attention, (4, 32, 6, 6)),
    'condconv': (lambda: CondConvRouter(32, 8), (4, 32, 6, 6)),
}


def outputs(result) -> list:
    result = result if isinstance(result, tuple) else (result, )
    return [r for r in result if r is not None]


@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('t', [0.0, 0.5])
@pytest.mark.parametrize('name', sorted(ATTENTIONS))
def test_attention_runs_in_float32_under_autocast(name, t, training):
    factory, shape = ATTENTIONS[name]
    att = factory()
    randomize_norms(att)
    att.train(training)
    if isinstance(att, KWAttention):
        att.temperature = t
    # the feature map autocast hands over is bfloat16; float32 sees the same values
    x16 = torch.randn(shape).to(BF16).requires_grad_()
    x32 = x16.detach().float().requires_grad_()
    state = {k: v.clone() for k, v in att.state_dict().items()}
    results = {}
    for key, x in (('fp32', x32), ('amp', x16)):
        att.load_state_dict(state)  # the same running statistics for both
        att.zero_grad()
        with torch.autocast('cpu', dtype=BF16, enabled=key == 'amp'):
            outs = outputs(att(x))
        loss = sum((o * torch.linspace(-1, 1, o.shape[-1])).sum() for o in outs)
        loss.backward()
        results[key] = (outs, [p.grad.clone() for p in att.parameters() if p.grad is not None],
                        x.grad)
    (out32, grads32, gx32), (out16, grads16, gx16) = results['fp32'], results['amp']
    assert all(o.dtype == torch.float32 for o in out16)
    assert gx16.dtype == BF16
    assert len(grads32) == len(grads16) > 0
    for a, b in zip(out16 + grads16, out32 + grads32):
        assert rel_err(a, b) < TOL
    assert rel_err(gx16, gx32) < 1e-2  # the map's gradient is rounded to bfloat16 once


class KWNet(nn.Module):
    def __init__(self, spec, omni=False):
        super().__init__()
        self.manager = WarehouseManager(omni_attention=omni)
        self.layer = self.manager.reserve(**spec, warehouse_name='w')
        self.other = self.manager.reserve(spec['in_channels'], spec['in_channels'], 1,
                                          bias=False, warehouse_name='w')
        self.manager.store()
        self.manager.allocate(self)

    def forward(self, x):
        return self.layer(x)


SPATIAL = dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, bias=True)
#: name -> layer factory
LAYERS = {
    'kw': lambda: KWNet(SPATIAL),
    'kw-star': lambda: KWNet(SPATIAL, omni=True),
    'dyconv': lambda: DyConv2d(16, 16, 3, padding=1, bias=True),
    'odconv': lambda: ODConv2d(16, 16, 3, padding=1),
    'condconv': lambda: CondConv2d(16, 16, 3, padding=1, bias=True),
}


@pytest.mark.parametrize('impl', ['fast', 'reference'])
@pytest.mark.parametrize('name', sorted(LAYERS))
def test_layer_product_stays_in_half_precision(name, impl):
    """The layer's output is bfloat16 under autocast and near float32; its parameters' gradients
    come back as float32 and point the same way."""
    net = LAYERS[name]()
    if name.startswith('kw'):
        set_temperature(net, 0.5)
        if name == 'kw-star':
            assert isinstance(net.layer.attention, KWStarAttention)
    x = torch.randn(3, 16, 6, 6)
    results = {}
    for amp in (False, True):
        net.zero_grad()
        with torch.autocast('cpu', dtype=BF16, enabled=amp), use_kw_impl(impl):
            y = net(x)
        y.float().square().sum().backward()
        results[amp] = (y, torch.cat([p.grad.flatten() for p in net.parameters()
                                      if p.grad is not None]))
    (y32, g32), (y16, g16) = results[False], results[True]
    # (the reference KW convolution adds its float32 bias after the product, promoting)
    assert y16.dtype == (torch.float32 if (name, impl) == ('kw', 'reference') else BF16)
    assert g16.dtype == torch.float32
    assert rel_err(y16, y32) < 3e-2
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.99


@pytest.mark.parametrize('name', ['kw', 'odconv', 'condconv'])
def test_attention_runs_in_the_parameters_dtype_outside_autocast(name):
    factory, shape = ATTENTIONS[name]
    att = factory().to(BF16)
    outs = outputs(att(torch.randn(shape, dtype=BF16)))
    assert all(o.dtype == BF16 for o in outs)


def test_attentions_run_on_a_device_without_autocast():
    """Shapes only (the 'meta' device, as the model tools use) need no autocast."""
    for name in ('kw', 'dyconv', 'odconv', 'condconv'):
        factory, shape = ATTENTIONS[name]
        att = factory().to('meta')
        outs = outputs(att(torch.empty(shape, device='meta')))
        assert all(o.device.type == 'meta' for o in outs)


def test_split_attentions_keep_the_annealed_attentions():
    """While t anneals an attention is ``t * beta`` plus a small learned part: its two
    half-precision parts keep it to about twice bfloat16's bits, the assembled kernels equal the
    float32 attentions times the bfloat16 warehouse, and the attentions' gradient is that of
    the high part alone."""
    g = torch.Generator().manual_seed(0)
    att = kw_attention()
    att.temperature = 0.5
    alpha = att(torch.randn(4, 32, 6, 6, generator=g)).detach().requires_grad_()
    cells = torch.randn(40, 6, generator=g, requires_grad=True)
    parts, doubled = split_attentions(alpha, cells, BF16)
    assert parts.dtype == doubled.dtype == BF16
    assert parts.shape == (4, 9, 80) and doubled.shape == (80, 6)
    high, low = parts.float().split(40, dim=-1)
    assert rel_err(high + low, alpha) < 2**-15 < rel_err(high, alpha)

    half_cells = cells.detach().to(BF16).float()
    wanted = alpha.detach() @ half_cells  # only the warehouse rounded
    weight = torch.randn(4, 9, 6, generator=g)
    kernels = parts.float() @ doubled.float()
    assert rel_err(kernels, wanted) < 1e-5
    assert rel_err(alpha.detach().to(BF16).float() @ half_cells, wanted) > 1e-4
    (kernels * weight).sum().backward()
    # (both gradients pass through bfloat16 once, as the high part's and the copies' casts do)
    assert rel_err(alpha.grad, weight @ half_cells.t()) < 2**-8
    assert rel_err(cells.grad, torch.einsum('bmn,bmk->nk', alpha.detach(), weight)) < 2**-8
