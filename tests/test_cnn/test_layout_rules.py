"""The paper's warehouse rules on small networks of known layout (kw_mm/cnn/layout_rules.py)."""
import pytest
import torch
import torch.nn as nn

from kw_mm.cnn import KWConvNd
from kw_mm.cnn.layout_rules import (LayoutRules, StaticQKWithKWValue, apply_plan, format_plan,
                                    plan_layout)


class SE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc1 = nn.Conv2d(c, 4, 1)
        self.fc2 = nn.Conv2d(4, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class Block(nn.Module):
    """conv1 -> SE -> conv2, with a projection shortcut where the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.se = SE(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = nn.Conv2d(cin, cout, 1, stride, bias=False) if (
            stride != 1 or cin != cout) else None

    def forward(self, x):
        y = self.conv2(torch.relu(self.se(self.conv1(x))))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class Net(nn.Module):
    """Stem, two stages of two blocks, a final 1x1 convolution."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.stages = nn.Sequential(nn.Sequential(Block(16, 16, 1), Block(16, 16, 1)),
                                    nn.Sequential(Block(16, 32, 2), Block(32, 32, 1)))
        self.head = nn.Conv2d(32, 64, 1)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def plan(net=None, **rules):
    torch.manual_seed(0)
    net = net or Net()
    return net, plan_layout(net, LayoutRules(**rules), torch.zeros(1, 3, 32, 32))


def test_rules_on_a_small_network():
    net, p = plan()
    layers = p.layers
    assert layers['stem'].warehouse is None and 'depth 1' in layers['stem'].reason
    assert layers['stages.0.0.se.fc1'].warehouse is None
    assert 'pooled' in layers['stages.0.0.se.fc2'].reason
    # the first block of stage 1 hands its conv1 and shortcut to stage 0; conv2 stays
    assert layers['stages.1.0.conv1'].warehouse == 'stage0_conv'
    assert layers['stages.1.0.short'].warehouse == 'stage0_conv'
    assert layers['stages.1.0.conv2'].warehouse == 'stage1_conv'
    # the final 1x1 joins the stage of the layer it reads instead of a warehouse of its own
    assert layers['head'].warehouse == 'stage1_conv' and 'joins' in layers['head'].reason
    assert list(p.warehouses) == ['stage0_conv', 'stage1_conv']
    assert p.warehouses['stage0_conv'].layers == [
        'stages.0.0.conv1', 'stages.0.0.conv2', 'stages.0.1.conv1', 'stages.0.1.conv2',
        'stages.1.0.conv1', 'stages.1.0.short']
    x = torch.randn(2, 3, 32, 32)
    manager = apply_plan(net, p)
    assert [(s.num_mixtures, s.cell_shape) for s in manager.specs] == [
        (9 * 4 + 9 * 2 + 2, (16, 16, 1, 1)), (9 * 3 + 2, (32, 32, 1, 1))]
    assert net(x).shape == (2, 64, 8, 8)
    text = format_plan(p, manager, net)
    assert text.splitlines()[0] == 'budget 1: 2 warehouses, 10 KW layers, 9 static'
    assert 'stage0_conv: cell [16, 16, 1, 1], m=56, n=56, b=1' in text


def test_options_change_the_plan():
    _, p = plan(handover=0, static_depth=0, separate=('pw', ))
    assert p.layers['stem'].warehouse == 'stage0_conv'
    assert p.layers['stages.1.0.conv1'].warehouse == 'stage1_conv'
    assert p.layers['stages.1.0.short'].warehouse == 'stage1_pw'
    _, p = plan(stage_blocks=1)
    assert p.layers['stages.0.1.conv2'].warehouse == 'stage0.1_conv'
    assert p.layers['stages.1.0.short'].warehouse == 'stage0.1_conv'  # the last group
    _, p = plan(static_pooled=False)
    assert p.layers['stages.0.0.se.fc2'].warehouse == 'stage0_conv'
    assert p.layers['stages.1.1.se.fc1'].warehouse == 'stage1_conv'


class TinyViT(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.embed = nn.Conv2d(3, c, 4, 4)
        self.layers = nn.ModuleList(
            nn.ModuleDict(dict(qkv=nn.Linear(c, 3 * c), proj=nn.Linear(c, c),
                               fc=nn.Linear(c, c))) for _ in range(2))
        self.cls = nn.Linear(c, 10)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        for layer in self.layers:
            q, k, v = layer['qkv'](x).chunk(3, dim=-1)
            att = torch.softmax(q @ k.transpose(1, 2), dim=-1)
            x = x + layer['proj'](att @ v)
            x = x + layer['fc'](x)
        return self.cls(x.mean(1))


def test_fused_qkv_keeps_query_and_key_static():
    torch.manual_seed(0)
    net = TinyViT()
    old = net.layers[0]['qkv']
    p = plan_layout(net, LayoutRules(), torch.zeros(1, 3, 32, 32))
    assert p.layers['cls'].warehouse is None and 'vectors' in p.layers['cls'].reason
    assert p.layers['layers.0.qkv'].weight_shape == (16, 16, 1)
    apply_plan(net, p)
    new = net.layers[0]['qkv']
    assert isinstance(new, StaticQKWithKWValue) and torch.equal(new.qk.weight,
                                                                old.weight[:32])
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(isinstance(m, KWConvNd) for m in net.modules()) == 6


def test_not_executed_layers_stay_static_and_unknown_subclasses_are_named():
    net = Net()
    net.unused = nn.Conv2d(3, 3, 1)
    _, p = plan(net)
    assert p.layers['unused'].reason == 'static: not executed by the trace forward'

    class Scaled(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    net = Net()
    net.head = Scaled(32, 64, 1)
    with pytest.raises(ValueError, match=r'^head \(Scaled\) cannot be a KW layer: its type '
                       r'Scaled is not one the rules know'):
        plan(net)
