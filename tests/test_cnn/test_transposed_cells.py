"""The transposed warehouse copies of the inference path (kw_mm.cnn.transposed_cells): kept
while the warehouse is unchanged, rebuilt whenever its values or storage change by any route,
dropped on train()/eval(), never used with gradients; and the path's routing and blocks."""
import copy

import pytest
import torch

import kw_mm.cnn.fast_im2col_inference as fast_im2col_inference
from kw_mm.cnn import use_kw_impl
from kw_mm.cnn.blocks import input_block
from kw_mm.cnn.plan import REASONS, transposed_rule
from kw_mm.cnn.transposed_cells import TransposedCells, transpose_cells
from tests.test_cnn.test_fast import build, conv, rel_err


def late_layer_net():
    """A 64-channel 3x3 KW layer that takes the transposed inference path at 7x7 (as
    ResNet18's layer4 does), and an input."""
    torch.manual_seed(0)
    net = build([conv(64, 64), conv(64, 64)])
    return net, torch.randn(4, 64, 7, 7)


def test_cache_keeps_one_copy_while_unchanged():
    cells = torch.nn.Parameter(torch.randn(5, 8, 4, 1, 1))
    cache = TransposedCells()
    first = cache.get(0, cells)
    assert torch.equal(first, cells.detach().reshape(5, 8, 4).transpose(1, 2))
    assert first.is_contiguous() and first.shape == (5, 4, 8)
    assert cache.get(0, cells) is first  # reused
    cache.clear()
    assert len(cache) == 0 and cache.get(0, cells) is not first


@pytest.mark.parametrize('write', ['no_grad copy_', 'data copy_', 'data replaced', 'to double'])
def test_cache_sees_every_kind_of_write(write):
    """In-place writes (version counter), writes through ``.data`` (no version bump: the
    sampled values), replaced storage, another dtype: each gives a fresh copy."""
    torch.manual_seed(0)
    cells = torch.nn.Parameter(torch.randn(5, 8, 4, 1, 1))
    cache = TransposedCells()
    cache.get(0, cells)
    new = torch.randn(5, 8, 4, 1, 1)
    if write == 'no_grad copy_':
        with torch.no_grad():
            cells.copy_(new)
    elif write == 'data copy_':
        version = cells._version
        cells.data.copy_(new)
        assert cells._version == version  # what the sampled values are there for
    elif write == 'data replaced':
        cells.data = new
    else:
        cells.data = cells.data.double()
        new = cells.detach()
    assert torch.equal(cache.get(0, cells), transpose_cells(new.to(cells.dtype)))


def test_layer_in_eval_follows_its_weights():
    """A KW layer in eval mode gives the reference result after its warehouse is written
    through ``.data`` (as mmengine's EMA hook swaps weights) and after load_state_dict."""
    net, x = late_layer_net()
    net.eval()
    layer, manager = net.layers[0], net.manager
    with torch.no_grad():
        layer(x)
        assert len(manager._transposed) == 1  # the path ran and kept its copy
        for write in ('data', 'state_dict'):
            new = torch.randn_like(manager.weights[0])
            if write == 'data':
                manager.weights[0].data.copy_(new)
            else:
                net.load_state_dict({**net.state_dict(), 'manager.weights.0': new})
            y = layer(x)
            with use_kw_impl('reference'):
                expected = layer(x)
            assert rel_err(y, expected) < 1e-5, write


def test_mode_switch_and_copies_start_empty():
    net, x = late_layer_net()
    net.eval()
    with torch.no_grad():
        net.layers[0](x)
    assert len(net.manager._transposed) == 1
    assert len(copy.deepcopy(net).manager._transposed) == 0
    net.eval()  # already evaluating: kept (inference code often calls eval() every batch)
    assert len(net.manager._transposed) == 1
    net.manager.clear_transposed_cells()
    assert len(net.manager._transposed) == 0
    with torch.no_grad():
        net.layers[0](x)
    net.train()
    assert len(net.manager._transposed) == 0
    net.eval()
    assert len(net.manager._transposed) == 0


def test_not_used_with_gradients():
    """A step with gradients runs the im2col path (its warehouse changes at every step)."""
    net, x = late_layer_net()
    net.train()
    net.layers[0](x).sum().backward()
    assert len(net.manager._transposed) == 0
    assert net.manager.weights[0].grad is not None


def test_routing_of_the_inference_path():
    """2-D layers with a kernel larger than 1x1 on maps under 64 output pixels, with cells of
    at least 16 input channels, batches of at least 4, at most one warehouse cell per pixel."""
    torch.manual_seed(0)
    geo = build([conv(512, 512), conv(256, 512, stride=2)]).layers[0].geometry

    def uses(geo, x, num_cells, needs_grad=False):
        return transposed_rule(geo, x.shape[2:], x.shape[0], num_cells, needs_grad)[0]
    assert uses(geo, torch.empty(8, 512, 7, 7), 27)
    assert uses(geo, torch.empty(4, 512, 7, 7), 49)
    assert not uses(geo, torch.empty(8, 512, 7, 7), 27, needs_grad=True)  # no backward
    assert not uses(geo, torch.empty(8, 512, 7, 7), None)  # no kept copy
    assert not uses(geo, torch.empty(8, 512, 14, 14), 27)  # 196 pixels: channel-major
    assert not uses(geo, torch.empty(3, 512, 7, 7), 27)  # batch under 4
    assert not uses(geo, torch.empty(8, 512, 7, 7), 50)  # more cells than pixels
    pointwise = build([conv(512, 512, 1)]).layers[0].geometry
    assert not uses(pointwise, torch.empty(8, 512, 7, 7), 27)
    thin = build([conv(512, 512), conv(512, 512, groups=512)]).layers[0].geometry  # ci = 1
    assert not uses(thin, torch.empty(8, 512, 7, 7), 27)
    code, args = transposed_rule(geo, (7, 7), 8, 108, False)[1]
    assert REASONS[code].format(*args) == '108 cells > 1 x 49 pixels: assembly-bound'


def test_input_block():
    """The largest aligned divisor of the cells' input channels within the budget (below the
    alignment only for a strict memory bound)."""
    torch.manual_seed(0)
    geo = build([conv(512, 512)]).layers[0].geometry  # cells 512x512, M = 9
    per_channel = 8 * geo.num_mixtures * geo.cell_out * 4
    assert input_block(geo, 8, 4, 113 * per_channel, 16) == 64
    assert input_block(geo, 8, 4, 128 * per_channel, 16) == 128
    assert input_block(geo, 8, 4, 1, 16) == 16  # the smallest aligned block
    assert input_block(geo, 8, 4, 8 * per_channel, 16, strict=True) == 8
    assert input_block(geo, 8, 4, 10**12, 16) == 512
    odd = build([conv(24, 24)]).layers[0].geometry  # 24 channels: no divisor of 16
    assert input_block(odd, 1, 4, 7 * odd.num_mixtures * odd.cell_out * 4, 16) == 6
    with pytest.raises(ValueError, match='block must divide'):
        fast_im2col_inference.forward(torch.zeros(1, 512, 7, 7), None, None, None, geo, 100)
