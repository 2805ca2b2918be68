"""The rival dynamic convolutions (kw_mm.cnn.dynamic: DY-Conv, ODConv, CondConv) against an
independent per-sample oracle.

The oracle is written from the papers' formulas and shares no code with kw_mm: every sample's
attention is computed from the layer's parameters with explicit arithmetic (BatchNorm too), its
kernel is assembled explicitly (ODConv: all four attentions applied to the *kernel*, where the
layer applies the channel and filter attentions to the feature maps) and the sample is convolved
on its own. Forward and backward (input and parameter gradients), batch 1 and N, point-wise,
depth-wise, grouped, strided and dilated layers, the temperature and the CAF option.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kw_mm.cnn.dynamic import (CondConv2d, CondConvRouter, CondLinear, DyConv2d, ODConv2d,
                               get_softmax_temperature, set_softmax_temperature)

#: (in, out, kernel, stride, padding, dilation, groups)
GEOMETRIES = {
    'pointwise': (12, 20, 1, 1, 0, 1, 1),
    'depthwise': (16, 16, 3, 1, 1, 1, 16),
    'strided': (12, 20, 3, 2, 1, 1, 1),
    'grouped-dilated': (12, 8, 3, 1, 2, 2, 4),
}


def _normalize(z: torch.Tensor, t: float, function: str) -> torch.Tensor:
    if function == 'softmax':
        e = torch.exp(z / t - (z / t).max())
        return e / e.sum()
    return z / (z.abs().sum() + 1e-3)


def _conv_one(x_b, kernel, bias, layer) -> torch.Tensor:
    return F.conv2d(x_b[None], kernel, bias, layer.stride, layer.padding, layer.dilation,
                    layer.groups)[0]


def dyconv_oracle(layer: DyConv2d, x: torch.Tensor, t: float, function: str) -> torch.Tensor:
    att = layer.attention
    outs = []
    for x_b in x:
        s = x_b.mean(dim=(1, 2))
        h = torch.clamp(att.fc1.weight @ s + att.fc1.bias, min=0)
        a = _normalize(att.fc2.weight @ h + att.fc2.bias, t, function)
        kernel = sum(a[i] * layer.weight[i] for i in range(layer.num_kernels))
        bias = None if layer.bias is None else sum(a[i] * layer.bias[i]
                                                   for i in range(layer.num_kernels))
        outs.append(_conv_one(x_b, kernel, bias, layer))
    return torch.stack(outs)


def odconv_oracle(layer: ODConv2d, x: torch.Tensor, t: float, function: str,
                  training: bool) -> torch.Tensor:
    att = layer.attention
    cout, cin_g, k = layer.out_channels, layer.in_channels // layer.groups, layer.kernel_size[0]
    pooled = x.mean(dim=(2, 3))
    z = pooled @ att.fc.weight.flatten(1).t()
    bn = att.bn
    if training and x.shape[0] > 1:  # batch statistics (biased variance)
        mean, var = z.mean(0), z.var(0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    hidden = torch.clamp((z - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias, min=0)

    def head(conv):
        return conv.weight.flatten(1) @ hidden_b + conv.bias

    outs = []
    for b, x_b in enumerate(x):
        hidden_b = hidden[b]
        a_c = torch.sigmoid(head(att.channel_fc) / t)
        a_f = torch.sigmoid(head(att.filter_fc) / t) if att.filter_fc is not None \
            else torch.ones(cout, dtype=x.dtype)
        a_s = torch.sigmoid(head(att.spatial_fc) / t).view(k, k) if att.spatial_fc is not None \
            else torch.ones(k, k, dtype=x.dtype)
        a_w = _normalize(head(att.kernel_fc), t, function) if att.kernel_fc is not None \
            else torch.ones(1, dtype=x.dtype)
        # the input channel of filter o, position j: group(o) * Cin/g + j
        groups_of_filters = torch.arange(cout) // (cout // layer.groups)
        in_index = groups_of_filters[:, None] * cin_g + torch.arange(cin_g)[None]
        kernel = sum(a_w[i] * layer.weight[i] for i in range(layer.num_kernels)) * a_s
        kernel = kernel * a_c[in_index][:, :, None, None] * a_f[:, None, None, None]
        outs.append(_conv_one(x_b, kernel, None, layer))
    return torch.stack(outs)


def condconv_oracle(layer: CondConv2d, x: torch.Tensor) -> torch.Tensor:
    outs = []
    for x_b in x:
        r = torch.sigmoid(layer.router.fc.weight @ x_b.mean(dim=(1, 2)) + layer.router.fc.bias)
        kernel = sum(r[i] * layer.weight[i] for i in range(layer.num_kernels))
        bias = None if layer.bias is None else sum(r[i] * layer.bias[i]
                                                   for i in range(layer.num_kernels))
        outs.append(_conv_one(x_b, kernel, bias, layer))
    return torch.stack(outs)


def _randomize(layer: nn.Module, seed: int) -> None:
    """Parameters and BN statistics away from their init, so every term matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
        for m in layer.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _check_forward_backward(layer: nn.Module, x: torch.Tensor, oracle) -> None:
    """Same output and same gradients (input and every parameter) as the oracle."""
    gen = torch.Generator().manual_seed(7)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = oracle(ref_x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    probe = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    params = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * probe).sum(), [x] + params)
    ref_grads = torch.autograd.grad((ref * probe).sum(), [ref_x] + params, allow_unused=True)
    for got, want in zip(grads, ref_grads):
        want = torch.zeros_like(got) if want is None else want
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-9)


def _input(batch: int, channels: int, size: int = 9) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(3),
                       dtype=torch.float64)


@pytest.mark.parametrize('geometry', sorted(GEOMETRIES))
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('function', ['softmax', 'caf'])
@pytest.mark.parametrize('bias', [False, True])
def test_dyconv_matches_oracle(geometry, batch, function, bias):
    cin, cout, k, stride, padding, dilation, groups = GEOMETRIES[geometry]
    torch.manual_seed(0)
    layer = DyConv2d(cin, cout, k, stride, padding, dilation, groups, bias=bias,
                     attention_function=function).double()
    _randomize(layer, 1)
    t = 7.0
    assert set_softmax_temperature(layer, t) == 1
    _check_forward_backward(layer, _input(batch, cin),
                            lambda x: dyconv_oracle(layer, x, t, function))


@pytest.mark.parametrize('geometry', sorted(GEOMETRIES))
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('function', ['softmax', 'caf'])
def test_odconv_matches_oracle(geometry, batch, training, function):
    cin, cout, k, stride, padding, dilation, groups = GEOMETRIES[geometry]
    torch.manual_seed(0)
    layer = ODConv2d(cin, cout, k, stride, padding, dilation, groups,
                     attention_function=function).double().train(training)
    _randomize(layer, 2)
    t = 3.0
    set_softmax_temperature(layer, t)
    _check_forward_backward(layer, _input(batch, cin),
                            lambda x: odconv_oracle(layer, x, t, function, training))


@pytest.mark.parametrize('geometry', sorted(GEOMETRIES))
@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('bias', [False, True])
def test_condconv_matches_oracle(geometry, batch, bias):
    cin, cout, k, stride, padding, dilation, groups = GEOMETRIES[geometry]
    torch.manual_seed(0)
    layer = CondConv2d(cin, cout, k, stride, padding, dilation, groups, bias=bias).double()
    _randomize(layer, 3)
    _check_forward_backward(layer, _input(batch, cin), lambda x: condconv_oracle(layer, x))


def test_odconv_heads_follow_the_release_rules():
    """Depth-wise: no filter head; 1x1: no spatial head; K = 1: no kernel head; h >= 16."""
    dw = ODConv2d(32, 32, 3, padding=1, groups=32)
    assert dw.attention.filter_fc is None and dw.attention.spatial_fc is not None
    pw = ODConv2d(320, 64, 1, num_kernels=1)
    assert pw.attention.spatial_fc is None and pw.attention.kernel_fc is None
    assert pw.attention.fc.out_channels == 20 and dw.attention.fc.out_channels == 16
    assert tuple(dw.weight.shape) == (4, 32, 1, 3, 3)
    keys = set(ODConv2d(64, 64, 3).state_dict())
    assert keys == {'weight', 'attention.fc.weight', 'attention.bn.weight', 'attention.bn.bias',
                    'attention.bn.running_mean', 'attention.bn.running_var',
                    'attention.bn.num_batches_tracked', 'attention.channel_fc.weight',
                    'attention.channel_fc.bias', 'attention.filter_fc.weight',
                    'attention.filter_fc.bias', 'attention.spatial_fc.weight',
                    'attention.spatial_fc.bias', 'attention.kernel_fc.weight',
                    'attention.kernel_fc.bias'}


def test_odconv_single_kernel_pointwise_matches_oracle():
    torch.manual_seed(0)
    layer = ODConv2d(12, 20, 1, num_kernels=1).double().eval()
    _randomize(layer, 4)
    _check_forward_backward(layer, _input(2, 12),
                            lambda x: odconv_oracle(layer, x, 1.0, 'softmax', False))


def test_dyconv_attention_hidden_width_and_temperature():
    layer = DyConv2d(64, 64, 3, padding=1)
    assert layer.attention.fc1.out_features == 16 and layer.attention.fc2.out_features == 4
    # (K - 1) extra kernels + fc1 + fc2, as the DY-Conv row sums of the KW paper
    extra = sum(p.numel() for p in layer.parameters()) - 64 * 64 * 9
    assert extra == 3 * 64 * 64 * 9 + 64 * 16 + 16 + 16 * 4 + 4
    assert get_softmax_temperature(layer) == 1.0  # evaluation and fine-tuning value
    x = _input(2, 64).float()
    layer.eval()
    set_softmax_temperature(layer, 30.0)
    smooth = layer.attention(x)
    set_softmax_temperature(layer, 1.0)
    sharp = layer.attention(x)
    # a high temperature flattens the attention towards uniform
    assert (smooth - 0.25).abs().max() < (sharp - 0.25).abs().max()
    torch.testing.assert_close(smooth.sum(-1), torch.ones(2))
    assert 'temperature=1.0' in repr(layer.attention)
    assert 'temperature' not in ''.join(layer.state_dict())


def test_caf_ignores_the_temperature_and_keeps_signs():
    torch.manual_seed(0)
    layer = DyConv2d(16, 16, 3, attention_function='caf')
    _randomize(layer, 5)
    x = _input(2, 16).float()
    set_softmax_temperature(layer, 30.0)
    a30 = layer.attention(x)
    set_softmax_temperature(layer, 1.0)
    torch.testing.assert_close(layer.attention(x), a30)
    assert (a30 < 0).any()  # contrasting: negative attentions exist


def test_shared_router_weights_every_attached_layer():
    torch.manual_seed(0)
    router = CondConvRouter(8, 4)
    conv1 = CondConv2d(8, 8, 3, padding=1, num_experts=4, own_router=False)
    conv2 = CondConv2d(8, 8, 3, padding=1, num_experts=4, own_router=False)
    router.attach(conv1)
    router.attach(conv2)
    x = torch.randn(2, 8, 6, 6)
    r = router.route(x)
    y = conv2(conv1(x))
    k1 = torch.einsum('bk,koihw->boihw', r, conv1.weight)
    k2 = torch.einsum('bk,koihw->boihw', r, conv2.weight)
    for b in range(2):
        want = F.conv2d(F.conv2d(x[b:b + 1], k1[b], padding=1), k2[b], padding=1)
        torch.testing.assert_close(y[b:b + 1], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match='no router of its own'):
        conv1(x)  # the weights are used once; a second call needs a new route()


def test_cond_linear_matches_oracle():
    torch.manual_seed(0)
    layer = CondLinear(6, 5, num_experts=3).double()
    x = torch.randn(4, 6, dtype=torch.float64)

    def oracle(x):
        outs = []
        for x_b in x:
            r = torch.sigmoid(layer.router.fc.weight @ x_b + layer.router.fc.bias)
            w = sum(r[i] * layer.weight[i] for i in range(3))
            outs.append(w @ x_b + sum(r[i] * layer.bias[i] for i in range(3)))
        return torch.stack(outs)

    _check_forward_backward(layer, x, oracle)


@pytest.mark.parametrize('build, message', [
    (lambda: DyConv2d(8, 8, 3, attention_function='sigmoid'), "one of \\['softmax', 'caf'\\]"),
    (lambda: ODConv2d(8, 8, 3, bias=True), 'has no bias'),
    (lambda: ODConv2d(8, 8, (3, 1)), 'square kernel'),
    (lambda: DyConv2d(8, 6, 3, groups=4), 'divisible by groups'),
    (lambda: CondConv2d(8, 8, 3, num_experts=0), 'num_kernels must be an integer >= 1'),
])
def test_bad_arguments_name_what_is_allowed(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize('t', [0, -1, float('nan'), 'hot'])
def test_bad_temperature(t):
    with pytest.raises((ValueError, TypeError), match='temperature must be'):
        set_softmax_temperature(DyConv2d(8, 8, 1), t)
