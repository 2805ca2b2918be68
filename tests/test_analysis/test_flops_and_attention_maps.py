"""FLOPs counting (kernel assembly and attention included) and the attention heat maps."""
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from kw_mm import set_temperature
from kw_mm.cnn import WarehouseManager
from kw_mm.analysis.attention_maps import AttentionRecorder, plot_warehouse
from kw_mm.demo_data.classification import write_classification_set
from kw_mm.analysis.flops import count_params_and_flops, kw_layer_flops
from kw_mm.runner.launch import build_model

from tests.helpers import REPO_ROOT as ROOT
DEMO_CFG = osp.join(ROOT, 'configs', 'demo', 'kw1x-resnet18_demo-cls.py')


class OneKWLayer(nn.Module):
    """A plain 3x3 conv (3 -> 16) then one KW 3x3 conv (16 -> 32, stride 2) with budget b."""

    def __init__(self, budget: float = 1.0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.warehouse_manager = WarehouseManager(cell_num_ratio=budget)
        self.kw = self.warehouse_manager.reserve(16, 32, 3, stride=2, padding=1, bias=False,
                                                 warehouse_name='w')
        self.warehouse_manager.store()
        self.warehouse_manager.allocate(self)

    def forward(self, x):
        return self.kw(self.stem(x))


def test_kw_layer_flops_hand_count():
    model = OneKWLayer(budget=2.0)
    # cells [32, 16]: M = 9 spatial positions x 1 x 1; n = int(9 * 2) = 18; hidden = 16
    assert model.kw.geometry.num_mixtures == 9 and model.kw.attention.num_cells == 18
    hand = dict(
        attention=16 * 8 * 8  # pool over the 8x8 input
        + 16 * 16  # fc1
        + 2 * 16  # BatchNorm1d
        + 16 * 19 * 9  # fc2: (n + 1) * M logits
        + 2 * 19 * 9,  # CAF: L1 sum and division
        assembly=9 * 18 * 32 * 16,  # [M, n] @ [n, co * ci]
        conv=32 * 4 * 4 * 16 * 9)  # static conv count on the 4x4 output
    flops = kw_layer_flops(model.kw, (8, 8), (4, 4))
    assert {k: flops[k] for k in hand} == hand
    assert flops['total'] == sum(hand.values())

    stats = count_params_and_flops(model, (3, 8, 8))
    stem = 16 * 8 * 8 * 3 * 9
    assert stats['flops_kw_assembly'] == hand['assembly']
    assert stats['flops_kw_attention'] == hand['attention']
    assert stats['flops_kw_conv'] == hand['conv']
    assert stats['flops_other'] == stem  # mmengine's count of the plain conv only
    assert stats['flops'] == stem + sum(hand.values())
    assert stats['params'] == sum(p.numel() for p in model.parameters())
    assert stats['params_warehouses'] == 18 * 32 * 16
    assert stats['params_attention'] == sum(p.numel() for p in model.kw.attention.parameters())
    assert [r['name'] for r in stats['kw_layers']] == ['kw']


def test_resnet18_assembly_flops_match_warehouse_layout():
    model = build_model(Config.fromfile(DEMO_CFG))
    stats = count_params_and_flops(model, (3, 32, 32))
    summary = model.backbone.warehouse_summary()
    assert [w['m'] for w in summary] == [56, 47, 47, 27]  # paper Table 14, KW 1x
    # every mixture of a warehouse combines all n cells of size co x ci
    expected = sum(w['m'] * w['n'] * int(np.prod(w['cell_shape'])) for w in summary)
    assert stats['flops_kw_assembly'] == expected
    assert stats['flops'] > stats['flops_kw_conv'] + stats['flops_kw_assembly'] > 0


def printed_count(stdout: str, label: str) -> int:
    """The exact count get_flops.py prints in parentheses after ``label``."""
    match = re.search(rf'^\s*{re.escape(label)}\s+\S+ \(([0-9,]+)\)', stdout, re.MULTILINE)
    assert match, f'no {label!r} count in:\n{stdout}'
    return int(match.group(1).replace(',', ''))


@pytest.mark.slow  # starts a subprocess
def test_get_flops_cli():
    proc = subprocess.run([sys.executable, 'tools/analysis/get_flops.py', DEMO_CFG, '--shape',
                           '32'], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = build_model(Config.fromfile(DEMO_CFG))
    stats = count_params_and_flops(model, (3, 32, 32))
    # The printed numbers are the model's: its parameters, and kw_mm.analysis.flops' counts.
    assert printed_count(proc.stdout, 'params:') == sum(p.numel() for p in model.parameters())
    assert printed_count(proc.stdout, 'FLOPs:') == stats['flops']
    assembly = printed_count(proc.stdout, 'KW assembly')
    assert assembly == stats['flops_kw_assembly'] > 0
    summary = model.backbone.warehouse_summary()
    assert assembly == sum(w['m'] * w['n'] * int(np.prod(w['cell_shape'])) for w in summary)
    parts = [printed_count(proc.stdout, label)
             for label in ('KW conv', 'KW assembly', 'KW attention', 'other')]
    assert parts == [stats[k] for k in ('flops_kw_conv', 'flops_kw_assembly',
                                        'flops_kw_attention', 'flops_other')]
    assert sum(parts) == stats['flops']
    # One table row per warehouse, with its layers and cells.
    for w in summary:
        assert re.search(rf"^{w['name']}\s+{w['num_layers']}\s+{w['n']}\s", proc.stdout,
                         re.MULTILINE), w['name']


def test_attention_recorder_at_t1_is_the_one_to_one_init():
    model = OneKWLayer(budget=1.0).eval()
    set_temperature(model, 1.0)
    with AttentionRecorder(model) as rec, torch.no_grad():
        model(torch.randn(3, 3, 8, 8))
        model(torch.randn(2, 3, 8, 8))
    (name, wh), = rec.warehouses().items()
    assert name == 'w' and wh.counts == [5]
    np.testing.assert_allclose(wh.mean(), np.eye(9), atol=1e-7)  # cell j for mixture j


def test_plot_warehouse_writes_png(tmp_path):
    model = OneKWLayer(budget=2.0).eval()
    with AttentionRecorder(model) as rec, torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    path = plot_warehouse(rec.warehouses()['w'], str(tmp_path / 'w.png'))
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow  # starts a subprocess
def test_vis_attention_cli(tmp_path):
    paths = write_classification_set(str(tmp_path / 'data'), num_train=1, num_val=2,
                                     image_size=32)
    model = build_model(Config.fromfile(DEMO_CFG))
    ckpt = tmp_path / 'model.pth'
    # A Runner checkpoint after epoch 1 of the demo run (15 iterations per epoch): the config's
    # hook (T = 2 epochs) puts it at t = 1 - 15 / 30.
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1, iter=15),
                    message_hub=dict(runtime_info=dict(max_iters=180, max_epochs=12))), ckpt)
    out = tmp_path / 'maps'
    proc = subprocess.run([sys.executable, 'tools/analysis/vis_attention.py', DEMO_CFG,
                           str(ckpt), '--data', paths['data_root'], '--out', str(out),
                           '--max-images', '8', '--batch-size', '4'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pngs = sorted(os.listdir(out))
    assert len([p for p in pngs if p.endswith('.png')]) == 4  # one per ResNet18 warehouse
    for png in pngs:
        if png.endswith('.png'):
            with open(out / png, 'rb') as f:
                assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    means = np.load(out / 'mean_attention.npz')
    assert sorted(m.shape for m in means.values()) == [(27, 27), (47, 47), (47, 47), (56, 56)]
    assert 'averaged over 8 images' in proc.stdout
    assert 'temperature t = 0.5' in proc.stdout


@pytest.mark.parametrize('shape', [(8, ), (2, 3, 8, 8)])
def test_count_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match='input_shape'):
        count_params_and_flops(OneKWLayer(), shape)
