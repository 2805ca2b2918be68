"""Folding the evaluation BatchNorms (and activations) that follow KW layers into them for the
export (kw_mm/deployment/export_fold.py).

A small network has every case: a stem and a depth-wise layer whose BatchNorm and activation
fold, a point-wise layer whose BatchNorm folds without an activation, a layer whose kernel is
larger than its output (not folded: scaling it would cost more than the BatchNorm), and an
activation module called twice (not moved). The folded model must compute what the model
computes, in PyTorch (float64) and in onnxruntime with a symbolic batch.
"""
import pytest
import torch
import torch.nn as nn

from kw_mm.cnn import WarehouseManager, use_kw_impl
from kw_mm.deployment import check_onnx, export_onnx
from kw_mm.deployment.export_fold import Fold, find_folds, folded_norms, norm_factors
from tests.test_cnn.test_kw_conv import randomize

SHAPE = (3, 16, 16)


class FoldNet(nn.Module):
    """stem -> bn -> ReLU6, depth-wise -> bn -> ReLU, point-wise -> bn, a late layer (kernel
    larger than its 2x2 output) -> bn -> the shared ReLU, + the point-wise output -> the shared
    ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.manager = WarehouseManager()
        reserve = self.manager.reserve
        self.stem = reserve(3, 8, 3, stride=2, padding=1, bias=True, warehouse_name='a')
        self.bn1, self.act1 = nn.BatchNorm2d(8), nn.ReLU6(inplace=True)
        self.dw = reserve(8, 8, 3, padding=1, groups=8, warehouse_name='b')
        self.bn2, self.act2 = nn.BatchNorm2d(8), nn.ReLU()
        self.pw = reserve(8, 8, 1, warehouse_name='c')
        self.bn3 = nn.BatchNorm2d(8)
        self.late = reserve(8, 8, 3, stride=2, padding=1, warehouse_name='a')
        self.bn4 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.manager.store()
        self.manager.allocate(self)

    def forward(self, x):
        x = self.act2(self.bn2(self.dw(self.act1(self.bn1(self.stem(x))))))
        y = self.bn3(self.pw(x))
        z = self.relu(self.bn4(self.late(y)))
        return z.mean((2, 3)) + self.relu(y).mean((2, 3))


def fold_net(dtype=torch.float32) -> FoldNet:
    torch.manual_seed(0)
    net = FoldNet().to(dtype).eval()
    randomize(net)
    return net


def example(batch: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, *SHAPE, dtype=dtype, generator=torch.Generator().manual_seed(1))


def test_finds_what_folds_and_nothing_else():
    assert find_folds(fold_net(), example(2)) == [Fold('stem', 'bn1', 'act1'),
                                                  Fold('dw', 'bn2', 'act2'),
                                                  Fold('pw', 'bn3', None)]


def test_norm_factors_are_the_evaluation_batch_norm():
    norm = fold_net(torch.float64).bn1
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    scale, shift = norm_factors(norm)
    torch.testing.assert_close(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), norm(x))


@pytest.mark.parametrize('batch', [1, 3])
def test_folded_model_computes_the_model(batch):
    net, x = fold_net(torch.float64), example(batch, torch.float64)
    with torch.no_grad():
        expected = net(x)
        with use_kw_impl('reference'):
            reference = net(x)
        with folded_norms(net, x) as folds, use_kw_impl('export'):
            assert len(folds) == 3 and isinstance(net.bn1, nn.Identity)
            folded = net(x)
        with folded_norms(net, x):  # any implementation sees the same function
            fast = net(x)
    torch.testing.assert_close(reference, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(folded, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast, expected, rtol=1e-10, atol=1e-10)
    # everything is back
    assert isinstance(net.bn1, nn.BatchNorm2d) and isinstance(net.act1, nn.ReLU6)
    assert not any('export_epilogue' in m.__dict__ for m in net.modules())


def test_exported_folded_model_matches_in_onnxruntime(tmp_path):
    """Symbolic batch: the folded layers' BatchNorms are gone and their activations run in
    the Scan body after the Conv; the file matches the (unfolded) model at batch 1 and 3."""
    import onnx
    net = fold_net()
    path = export_onnx(net, str(tmp_path / 'fold.onnx'), SHAPE, dynamic_batch=True)
    graph = onnx.load(path).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count('BatchNormalization') == 1, ops  # bn4 only
    bodies = [[n.op_type for a in n.attribute if a.name == 'body' for n in a.g.node]
              for n in graph.node if n.op_type == 'Scan']
    assert len(bodies) == 4, bodies
    after_conv = [body[body.index('Conv') + 1] for body in bodies]
    assert sorted(after_conv) == ['Clip', 'Identity', 'Identity', 'Relu'], bodies
    errors = check_onnx(path, net, SHAPE, (1, 3))
    assert max(errors.values()) < 1e-5, errors
    unfolded = export_onnx(net, str(tmp_path / 'plain.onnx'), SHAPE, dynamic_batch=True,
                           fold_norms=False)
    assert [n.op_type for n in onnx.load(unfolded).graph.node].count('BatchNormalization') == 4
