"""KW* layers (kw_mm.cnn.kw_star: KW with ODConv's channel, filter and spatial attentions,
paper Table 17) against an independent per-sample oracle written from the papers: KW's
attention (CAF with the zero cell, the temperature mix with the one-to-one init), the kernel
assembled cell by cell in the mixture order ``j = (s * go + o) * gi + i``, then ODConv's three
attentions applied to the *kernel* (spatial positions, input and output channels), every sample
convolved on its own. Forward and backward, batch 1 and N, point-wise, depth-wise and strided
layers, every implementation of the KW product (the plan, the reference, each forced path where
it applies), t = 0, 1/2 and 1."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kw_mm.cnn import WarehouseManager, set_temperature, use_kw_impl
from kw_mm.cnn import plan as plan_module
from kw_mm.cnn.kw_star import KWStarAttention
from kw_mm.cnn.plan import PATHS, applies
from tests.helpers.kw_oracle import assemble_kernel, kw_alpha
from tests.test_cnn.test_kw_conv import randomize


class Net(nn.Module):
    """One warehouse, the tested KW* layer first and a neighbour sharing the warehouse."""

    def __init__(self, spec, omni=True):
        super().__init__()
        self.manager = WarehouseManager(omni_attention=omni)
        self.layer = self.manager.reserve(**spec, warehouse_name='w')
        self.other = self.manager.reserve(spec['in_channels'], spec['in_channels'], 1,
                                          bias=False, warehouse_name='w')
        self.manager.store()
        self.manager.allocate(self)


CASES = {
    'pointwise': dict(in_channels=16, out_channels=24, kernel_size=1, bias=False),
    'depthwise': dict(in_channels=16, out_channels=16, kernel_size=3, padding=1, groups=16,
                      bias=False),
    'strided-bias': dict(in_channels=16, out_channels=16, kernel_size=3, stride=2, padding=1,
                         bias=True),
}


def oracle(layer, x, t, training):
    att = layer.attention
    batch, cin = x.shape[:2]
    alpha, hidden = kw_alpha(att, x, t, training)

    def head(fc):
        return t + (1 - t) * torch.sigmoid(hidden @ fc.weight.t() + fc.bias)

    cout, cin_g, (kh, kw) = layer.out_channels, cin // layer.groups, layer.kernel_size
    a_c, a_f = head(att.channel_fc), head(att.filter_fc)
    a_s = head(att.spatial_fc) if att.spatial_fc is not None else torch.ones(batch, 1,
                                                                               dtype=x.dtype)
    outs = []
    for b in range(batch):
        weight = assemble_kernel(alpha[b], layer.cells, cout, cin_g)
        weight = weight * a_s[b]  # spatial attention on every filter and input channel
        in_index = (torch.arange(cout) // (cout // layer.groups))[:, None] * cin_g + \
            torch.arange(cin_g)[None]
        weight = weight * a_c[b][in_index][:, :, None] * a_f[b][:, None, None]
        outs.append(F.conv2d(x[b:b + 1], weight.reshape(cout, cin_g, kh, kw), layer.bias,
                             layer.stride, layer.padding, layer.dilation, layer.groups))
    return torch.cat(outs)


@pytest.mark.parametrize('case', sorted(CASES))
@pytest.mark.parametrize('batch, training', [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize('t', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('impl', ['fast', 'reference', *PATHS])
def test_kw_star_matches_oracle(case, batch, training, t, impl):
    torch.manual_seed(0)
    net = Net(CASES[case]).double().train(training)
    randomize(net, 1)
    set_temperature(net, t)
    layer = net.layer
    assert isinstance(layer.attention, KWStarAttention)
    x = torch.randn(batch, 16, 7, 7, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2), requires_grad=True)
    plan_module.clear_plans()
    with use_kw_impl(impl):
        out = layer(x)
    if impl in PATHS:  # the forced path runs where it applies (x needs gradients)
        taken = {p.path for p in plan_module._PLANS.values()}
        assert taken == ({impl} if applies(impl, layer.geometry, True) else taken - {impl})
    ref_x = x.detach().clone().requires_grad_(True)
    ref = oracle(layer, ref_x, t, training)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    probe = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(3))
    params = [p for p in net.parameters()]
    grads = torch.autograd.grad((out * probe).sum(), [x] + params, allow_unused=True)
    ref_grads = torch.autograd.grad((ref * probe).sum(), [ref_x] + params, allow_unused=True)
    for tensor, got, want in zip([x] + params, grads, ref_grads):
        zero = torch.zeros_like(tensor)  # an unused tensor (the other layer) on either side
        torch.testing.assert_close(zero if got is None else got, zero if want is None else want,
                                   rtol=1e-8, atol=1e-9)


def test_heads_follow_the_count_rules():
    """Filter head also on depth-wise layers (unlike ODConv), spatial head only for k > 1."""
    dw = Net(CASES['depthwise']).layer.attention
    pw = Net(CASES['pointwise']).layer.attention
    assert dw.filter_fc.out_features == 16 and dw.spatial_fc.out_features == 9
    assert pw.spatial_fc is None and pw.channel_fc.out_features == 16
    assert pw.filter_fc.out_features == 24 and pw.channel_fc.in_features == 16  # h = 16


def test_at_t_1_kw_star_is_kw():
    """At the start of pretraining (t = 1) every head is 1: KW* is its KW layer exactly."""
    torch.manual_seed(0)
    star, plain = Net(CASES['strided-bias']), Net(CASES['strided-bias'], omni=False)
    randomize(star, 4)
    plain.load_state_dict(star.state_dict(), strict=False)
    extra = set(star.state_dict()) - set(plain.state_dict())
    assert extra and all(k.split('.')[-2] in ('channel_fc', 'filter_fc', 'spatial_fc')
                         for k in extra)
    star.eval(), plain.eval()
    x = torch.randn(2, 16, 7, 7)
    for net in (star, plain):
        set_temperature(net, 1.0)
    torch.testing.assert_close(star.layer(x), plain.layer(x))
    set_temperature(star, 0.0)
    set_temperature(plain, 0.0)
    assert (star.layer(x) - plain.layer(x)).abs().max() > 1e-3
