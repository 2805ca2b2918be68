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
from kw_mm.cnn import AttentionBatchNorm1d, KWAttention, KWConv2d, use_kw_impl
from kw_mm.deployment import (ExportError, ExportTarget, check_onnx, export_onnx,
                              onnx_batch_dims, relative_error)
from tests.helpers import REPO_ROOT
from tests.helpers.tool_runs import check, run

SIZE = 64
TOLERANCE = 1e-4
#: Logit added to each mixture's assigned cell (see the module docstring).
ATTENTION_FOCUS = 32.0
MODELS = {
    'kw1x-resnet18': 'configs/kw1x-resnet18_8xb32_in1k.py',
    'kw1x-mobilenet-v2': 'configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
    'kw1x-convnext-tiny': 'configs/kw1x-convnext-tiny_8xb512-300e_in1k.py',
}


def calibrate_batch_norms(module: nn.Module, inputs: torch.Tensor, center: bool = True) -> None:
    """Give the network's BatchNorms the statistics of their input on ``inputs``, as training
    would (eval mode throughout, so frozen norms are calibrated too). The attentions'
    BatchNorm1d keep their defaults: statistics of a few pooled vectors would make the
    attentions ill-conditioned and amplify float rounding without bound.

    With ``center=False`` a norm only rescales its input (running mean 0, running variance the
    mean square): removing the mean of a ReLU's output magnifies the relative size of what is
    left, rounding errors included, and over the tens of layers of a ResNet-101 or RegNetX of
    random weights that alone brings two float32 implementations (even of the plain network)
    to the 1e-4 the exports are held to. Rescaled, the activations keep their size and the
    network its sensitivity to every layer."""
    def hook(norm, args):
        x = args[0].detach()
        dims = [d for d in range(x.dim()) if d != 1]
        if center:
            norm.running_mean.copy_(x.mean(dims))
            norm.running_var.copy_(x.var(dims, unbiased=False))
        else:
            norm.running_mean.zero_()
            norm.running_var.copy_(x.pow(2).mean(dims))

    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and not isinstance(m, AttentionBatchNorm1d)]
    handles = [m.register_forward_pre_hook(hook) for m in norms]
    module.eval()
    with torch.no_grad():
        module(inputs)
    for handle in handles:
        handle.remove()


def concentrate_attentions(model: nn.Module, strength: float = ATTENTION_FOCUS) -> None:
    """Add ``strength`` to the logit of every mixture's assigned cell (fc2 bias)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, KWAttention):
                assert not m.use_basis
                m.fc2.bias.add_(strength * m.beta.flatten())


def trained_like(config: str, part=None) -> ExportTarget:
    torch.manual_seed(0)
    model, t = init_model(osp.join(REPO_ROOT, config))
    assert t == 0.0 and get_temperature(model) == 0.0
    concentrate_attentions(model)
    target = ExportTarget(model, model.cfg.default_scope, part)
    calibrate_batch_norms(target, torch.randn(4, 3, SIZE, SIZE,
                                              generator=torch.Generator().manual_seed(2)))
    return target


@pytest.mark.parametrize('name', sorted(MODELS))
def test_one_file_serves_batch_1_and_3(name, tmp_path):
    target = trained_like(MODELS[name])
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    spread = []  # how much each attention differs between two samples
    handles = [m.register_forward_hook(lambda m, a, out: spread.append(
        (out[0] - out[1]).abs().max().item())) for m in target.modules()
        if isinstance(m, KWAttention)]
    with torch.no_grad():
        scores = target(x)
    for handle in handles:
        handle.remove()
    with torch.no_grad(), use_kw_impl('reference'):
        reference = target(x)
    assert scores.shape == (3, 1000) and scores.std() > 0.1  # a live network
    assert max(spread) > 0.05  # per-sample attentions
    assert relative_error(scores, reference) < TOLERANCE / 2  # a well-conditioned one
    path = export_onnx(target, str(tmp_path / f'{name}.onnx'), (3, SIZE, SIZE),
                       dynamic_batch=True)
    dims = onnx_batch_dims(path)
    assert all(not d.isdigit() for d in dims), f'batch dimension not symbolic: {dims}'
    errors = check_onnx(path, target, (3, SIZE, SIZE), batch_sizes=(1, 3))
    print(f'{name}: max relative error batch 1 {errors[1]:.2e}, batch 3 {errors[3]:.2e}')
    assert set(errors) == {1, 3} and max(errors.values()) < TOLERANCE, errors


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
