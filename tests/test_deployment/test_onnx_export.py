"""ONNX export with a symbolic batch (kw_mm.deployment, tools/deployment/export_onnx.py).

One exported file per model is run with onnxruntime at batch 1 and at batch 3 and compared with
the PyTorch model running its usual (fast) KW paths, so the check covers the export formulation
of the KW layers and the ONNX translation together. The models are the paper's, built from
``configs/`` at t = 0 with seeded random weights made "trained-like" in two ways:

* BatchNorm statistics taken from the input: a fresh network's default statistics let the
  activations of a deep KW network fade to zero, which would make any comparison pass;
* attentions concentrated on their assigned cells (the fc2 bias favours the one-to-one
  initialization, the pattern the paper's Figure 3 shows for trained models) on top of their
  input-dependent part: with fully random attentions at t = 0 a KW MobileNetV2 is chaotic (an
  input change of 1e-6 moves its scores by 30%, and its own fast and reference implementations
  differ by 6%), so no float32 comparison could mean anything. The test checks that the
  attentions still differ between samples and that PyTorch's two implementations agree first.

The largest relative errors over the outputs stay well below the 1e-4 asked for
(``docs/inference_and_deployment.md``).
"""
import os.path as osp
import re
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.utils import get_installed_path

from kw_mm import get_temperature
from kw_mm.apis import init_model
from kw_mm.cnn import KWConv2d
from kw_mm.deployment import (ExportError, ExportTarget, check_onnx, export_onnx,
                              onnx_batch_dims)
from tests.helpers import REPO_ROOT
from tests.helpers.export_checks import TOLERANCE, check_round_trip, make_trained_like
from tests.helpers.tool_runs import check, run

SIZE = 64
MODELS = {
    'kw1x-resnet18': 'configs/kw1x-resnet18_8xb32_in1k.py',
    'kw1x-mobilenet-v2': 'configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
    'kw1x-convnext-tiny': 'configs/kw1x-convnext-tiny_8xb512-300e_in1k.py',
}


def trained_like(config: str, part=None) -> ExportTarget:
    torch.manual_seed(0)
    model, t = init_model(osp.join(REPO_ROOT, config))
    assert t == 0.0 and get_temperature(model) == 0.0
    return make_trained_like(model, SIZE, model.cfg.default_scope, part)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_one_file_serves_batch_1_and_3(name, tmp_path):
    check_round_trip(trained_like(MODELS[name]), str(tmp_path / f'{name}.onnx'), SIZE)


def test_static_batch_export_fixes_batch_1(tmp_path):
    target = trained_like('configs/kw1x-resnet18_8xb32_in1k.py', part='backbone')
    path = export_onnx(target, str(tmp_path / 'b1.onnx'), (3, SIZE, SIZE), dynamic_batch=False)
    assert onnx_batch_dims(path) == ['1', '1']
    assert check_onnx(path, target, (3, SIZE, SIZE), batch_sizes=(1, ))[1] < TOLERANCE


@pytest.mark.slow
def test_tool_exports_mask_rcnn_backbone_and_neck(tmp_path):
    """The command line on the demo KW Mask R-CNN: the five FPN levels, batch 1 and 3."""
    config = 'configs/demo/mask-rcnn_kw-r18_demo-coco.py'
    torch.manual_seed(0)
    model, _ = init_model(osp.join(REPO_ROOT, config))
    checkpoint = str(tmp_path / 'det.pth')
    torch.save(model.state_dict(), checkpoint)
    out = str(tmp_path / 'det.onnx')
    proc = check(run([sys.executable, 'tools/deployment/export_onnx.py', config, checkpoint, out,
                      '--dynamic-batch', '--shape', str(SIZE)], timeout=1200))
    assert 'backbone+neck' in proc.stdout
    errors = {int(b): float(e) for b, e in re.findall(
        r'batch (\d): max relative error ([0-9.e+-]+)', proc.stdout)}
    assert set(errors) == {1, 3} and max(errors.values()) < TOLERANCE, proc.stdout
    assert len(onnx_batch_dims(out)) == 1 + 5  # the input and the FPN levels


# ------------------------------------------------------------------ bad input
def test_layer_that_cannot_be_exported_is_named(tmp_path):
    """mmdet's deformable-convolution Mask R-CNN: mmcv's C++ operator cannot be traced."""
    config = osp.join(get_installed_path('mmdet'), '.mim', 'configs', 'dcn',
                      'mask-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py')
    model, _ = init_model(config)
    # (the export's first forward pass, which finds the norms to fold, runs mmcv's operator
    # eagerly and stops at the first one the small input cannot feed; tracing would stop at
    # the first one of all: either is named)
    with pytest.raises(ExportError, match=r'^layer backbone\.layer\d\.\d\.conv2 '
                       r'\(mmcv\.ops\.deform_conv\.DeformConv2dPack\) cannot be exported'):
        export_onnx(ExportTarget(model, 'mmdet'), str(tmp_path / 'dcn.onnx'), (3, SIZE, SIZE))


class KthValuePool(nn.Module):
    """A pooling whose operator (aten.kthvalue) has no ONNX translation."""

    def forward(self, x):
        return torch.kthvalue(x.flatten(1), 3, dim=1).values


def test_operator_without_onnx_translation_is_named(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), KthValuePool())
    with pytest.raises(ExportError, match=r'^layer 1 \(.*KthValuePool\) cannot be translated to '
                       r'ONNX: .*aten\.kthvalue'):
        export_onnx(model, str(tmp_path / 'x.onnx'), (3, 8, 8))


def test_unallocated_kw_layer_is_named(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 1), KWConv2d(8, 8, 3, padding=1))
    with pytest.raises(ExportError, match=r'layer 1 \(KWConv2d\) cannot be exported: it is not '
                       'allocated'):
        export_onnx(model, str(tmp_path / 'x.onnx'), (3, 8, 8))


def test_missing_onnxruntime_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(ModuleNotFoundError, match=r'pip install .*onnxruntime'):
        check_onnx(str(tmp_path / 'x.onnx'), nn.Identity(), (3, 8, 8))


def test_unknown_part_lists_the_choices():
    with pytest.raises(ValueError, match=r"exports one of \['classifier', 'backbone'\], got "
                       "part='neck'"):
        ExportTarget(nn.Identity(), 'mmpretrain', 'neck')
