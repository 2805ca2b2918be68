"""The export formulation of the KW convolution (kw_mm/cnn/export.py) in PyTorch.

Each of its three convolutions (batched MatMul for point-wise layers, the batch folded into a
grouped convolution for a static batch, a scan over the samples for a symbolic batch) is checked
against the reference implementation on layers of every kind: 1-D/2-D/3-D, grouped, depth-wise,
strided, dilated, with bias. The scan runs eagerly here; the tests of the ONNX files
(test_onnx_export.py) run it exported.
"""
import pytest
import torch

from kw_mm.cnn import KWConvNd, use_kw_impl
from kw_mm.cnn.export import (Epilogue, assemble_kernels, batch_folded_conv,
                              kw_conv_export, pointwise_conv, scanned_conv)
from kw_mm.cnn.functional import assemble_kernels_reference, kw_conv_reference
from tests.test_cnn.test_kw_conv import Net, randomize, spec

# name -> (layer specs sharing one warehouse; the first is tested), input shape [C, *spatial]
LAYERS = {
    'conv2d-3x3': ([spec(8, 16, 3, 'conv2d', padding=1), spec(16, 8, 1, 'conv2d')], (8, 9, 9)),
    'conv2d-strided-bias': ([spec(8, 16, 3, 'conv2d', stride=2, padding=1, bias=True),
                             spec(16, 8, 1, 'conv2d')], (8, 9, 9)),
    'conv2d-grouped-dilated': ([spec(8, 8, 3, 'conv2d', padding=2, dilation=2, groups=2),
                                spec(4, 8, 1, 'conv2d')], (8, 7, 7)),
    'conv2d-depthwise': ([spec(8, 8, 3, 'conv2d', padding=1, groups=8),
                          spec(8, 16, 1, 'conv2d')], (8, 6, 6)),
    'conv2d-pointwise-strided': ([spec(8, 16, 1, 'conv2d', stride=2, bias=True),
                                  spec(16, 8, 3, 'conv2d', padding=1)], (8, 7, 7)),
    'conv1d-3': ([spec(4, 8, 3, 'conv1d', padding=1), spec(8, 4, 1, 'conv1d')], (4, 11)),
    'conv3d-anisotropic': ([spec(4, 8, (1, 3, 3), 'conv3d', padding=(0, 1, 1), bias=True),
                            spec(8, 4, 1, 'conv3d')], (4, 3, 5, 5)),
}


def layer_and_input(name: str, batch: int):
    specs, shape = LAYERS[name]
    torch.manual_seed(0)
    net = Net(specs).double().eval()
    randomize(net)
    layer = net.layers[0]
    assert isinstance(layer, KWConvNd)
    x = torch.randn(batch, *shape, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        alpha = layer.attention(x)
    return layer, x, alpha


@pytest.mark.parametrize('name', sorted(LAYERS))
def test_kernels_are_the_reference_kernels(name):
    layer, _, alpha = layer_and_input(name, 3)
    ours = assemble_kernels(alpha, layer.cells, layer.geometry)
    torch.testing.assert_close(ours, assemble_kernels_reference(alpha, layer.cells,
                                                                layer.geometry),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('name', sorted(LAYERS))
def test_every_convolution_matches_the_reference(name):
    layer, x, alpha = layer_and_input(name, 3)
    geo = layer.geometry
    expected = kw_conv_reference(x, alpha, layer.cells, None, geo)
    kernels = assemble_kernels(alpha, layer.cells, geo)
    with torch.no_grad():
        outs = {'batch-folded': batch_folded_conv(x, kernels, geo, 3),
                'scan': scanned_conv(x, kernels, geo)}
        if geo.is_pointwise:
            outs['matmul'] = pointwise_conv(x, kernels, geo)
    assert geo.is_pointwise == name.startswith('conv2d-pointwise')
    for how, out in outs.items():
        assert out.shape == expected.shape, how
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10, msg=how)


@pytest.mark.parametrize('batch', [1, 2])
@pytest.mark.parametrize('name', sorted(LAYERS))
def test_layer_in_export_mode_matches_the_reference(name, batch):
    layer, x, alpha = layer_and_input(name, batch)
    with torch.no_grad(), use_kw_impl('export'):
        ours = layer(x)
    with torch.no_grad(), use_kw_impl('reference'):
        expected = layer(x)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-10)
    direct = kw_conv_export(x, alpha, layer.cells, layer.bias, layer.geometry)
    torch.testing.assert_close(direct, expected, rtol=1e-10, atol=1e-10)


class Chain(Net):
    """The KW layers of :class:`Net` one after the other."""

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def test_exported_graph_uses_the_runtime_convolution(tmp_path):
    """A symbolic batch gives one Scan (a Conv inside) per spatial KW layer, a static batch one
    Conv with a computed weight; no layer copies its input once per kernel tap; onnxruntime
    agrees with PyTorch."""
    import onnx

    from kw_mm.deployment import check_onnx, export_onnx
    model = Chain([spec(4, 8, 3, 'conv2d', padding=1), spec(8, 8, 1, 'conv2d')]).eval()
    randomize(model)
    for dynamic, batch in ((True, 1), (False, 2)):
        path = export_onnx(model, str(tmp_path / f'{dynamic}.onnx'), (4, 6, 6), dynamic,
                           batch=batch)
        graph = onnx.load(path).graph
        initializers = {t.name for t in graph.initializer}
        ops = [n.op_type for n in graph.node]
        convs = [n for n in graph.node if n.op_type == 'Conv']
        if dynamic:
            assert ops.count('Scan') == 1 and not convs, ops
            scan = next(n for n in graph.node if n.op_type == 'Scan')
            body = [n.op_type for a in scan.attribute if a.name == 'body' for n in a.g.node]
            # the per-sample Conv reads its slice and writes the Scan's output directly
            assert 'Conv' in body and not {'Squeeze', 'Unsqueeze'} & set(body), body
        else:
            assert 'Scan' not in ops and len(convs) == 1, ops
            assert convs[0].input[1] not in initializers  # the weight is computed
        errors = check_onnx(path, model, (4, 6, 6), (1, 3) if dynamic else (2, ))
        assert max(errors.values()) < 1e-5, errors


def random_epilogue(channels: int, act=None) -> Epilogue:
    gen = torch.Generator().manual_seed(4)
    return Epilogue(0.5 + torch.rand(channels, generator=gen, dtype=torch.float64),
                    torch.randn(channels, generator=gen, dtype=torch.float64), act)


@pytest.mark.parametrize('name', sorted(LAYERS))
def test_folded_epilogue_matches_the_reference_then_the_epilogue(name):
    """A BatchNorm and activation folded into the layer (kernels scaled, the bias and the
    activation next to the convolution) in every convolution of the formulation."""
    layer, x, alpha = layer_and_input(name, 3)
    geo = layer.geometry
    epilogue = random_epilogue(geo.out_channels, torch.nn.Hardtanh(-1.0, 1.0))
    bias = None if layer.bias is None else layer.bias.detach()
    with torch.no_grad():
        expected = epilogue.apply(kw_conv_reference(x, alpha, layer.cells, bias, geo), bias)
        kernels = epilogue.scale_kernels(assemble_kernels(alpha, layer.cells, geo))
        folded_bias = epilogue.bias(bias)
        outs = {'batch-folded': batch_folded_conv(x, kernels, geo, 3, folded_bias, epilogue.act),
                'scan': scanned_conv(x, kernels, geo, folded_bias, epilogue.act),
                'layer': kw_conv_export(x, alpha, layer.cells, bias, geo, epilogue)}
    assert expected.min() == -1 and expected.max() == 1  # the activation clips both ends
    for how, out in outs.items():
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10, msg=how)
