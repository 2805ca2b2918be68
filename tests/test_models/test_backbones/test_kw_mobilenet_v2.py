"""KWMobileNetV2 and KWLinearClsHead: release layouts, checkpoint conversion, configs, behaviour."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmpretrain.structures import DataSample

from kw_mm import get_temperature, set_temperature
from kw_mm.cnn import KWAttention, KWConvNd, WarehouseManager, assemble_kernels_reference
from kw_mm.models import KWLinearClsHead, KWMobileNetV2
from kw_mm.apis import list_variants
from kw_mm.utils.checkpoint import CheckpointMismatchError
from kw_mm.converters.kw_release import convert_keys
from kw_mm.converters.kw_release.mobilenet_v2 import (find_classifier_warehouse, mmpretrain_keys,
                                                     to_mmpretrain_key)
from tests.helpers.kw_checks import assert_layer_matches_layout, copy_into_plain_twin
from tests.helpers.reference_kw import (ReferenceForward, calibrate, kw_layers, layouts, random_state_dict,
                          statedict_shapes)

from tests.helpers import REPO_ROOT as ROOT
CONFIGS = os.path.join(ROOT, 'configs')
VARIANTS = {v.name: v for v in list_variants() if v.family.startswith('mobilenet-v2')}
KW_RELEASES = sorted(name for name, v in VARIANTS.items() if v.budget is not None)
# config -> (released model it must equal, widen factor, budget or None for the baseline)
CONFIG_RELEASES = {
    f'{prefix}mobilenet-v2{width}_8xb32-150e_in1k.py': (f'{label}mobilenetv2_{suffix}', widen,
                                                         budget)
    for prefix, label, budget in (('', '', None), ('kw1d2x-', 'kw1d2x_', 0.5),
                                  ('kw1x-', 'kw1x_', 1), ('kw4x-', 'kw4x_', 4))
    for width, suffix, widen in (('', '100', 1.0), ('-w0.5', '050', 0.5))
}


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def module_name(reference_layer: str) -> str:
    """Our ImageClassifier module name of a reference layer (``features.2.conv.1.0`` ->
    ``backbone.layer2.0.conv.1.conv``), through the checkpoint converter."""
    return to_mmpretrain_key(reference_layer + '.weight')[:-len('.weight')]


_BUILT = {}


def release_classifier(name: str) -> nn.Module:
    """The paper variant ``name`` (1000 classes) built through mmpretrain's registry, cached."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = PRETRAIN_MODELS.build(VARIANTS[name].model_cfg())
    return _BUILT[name]


def warehouses_of(model: nn.Module):
    """(manager, index, spec) of every warehouse, backbone first, then the head."""
    return [(m, i, spec) for m in model.modules() if isinstance(m, WarehouseManager)
            for i, spec in enumerate(m.specs)]


# --------------------------------------------------------------------------- release layouts
def test_every_mobilenet_release_has_a_variant():
    released = {name for name in layouts() if 'mobilenetv2' in name}
    assert released == set(VARIANTS) and len(released) == 8
    assert all(VARIANTS[n].official == n for n in released)


@pytest.mark.parametrize('name', KW_RELEASES)
def test_release_layout_equals_reference(name):
    ref = layouts()[name]
    model = release_classifier(name)
    assert num_params(model) == ref['params_total']
    assert VARIANTS[name].release_params == ref['params_total']
    found = warehouses_of(model)
    assert len(found) == len(ref['warehouses'])
    modules = dict(model.named_modules())
    expected_beta = kw_layers(name)  # an independent implementation of the init rule
    for (manager, index, spec), wh in zip(found, ref['warehouses']):
        assert (spec.num_mixtures, spec.num_cells) == (wh['m_mixtures'], wh['n_cells']), wh
        assert list(spec.cell_shape) == wh['cell_shape'], wh['warehouse']
        assert spec.cell_num_ratio == wh['cell_num_ratio'] and spec.reduction == wh['reduction']
        assert tuple(manager.weights[index].shape) == (wh['n_cells'], *wh['cell_shape'])
        # Members, in allocation (module) order.
        members = [n for n, m in model.named_modules()
                   if isinstance(m, KWConvNd) and m.owner is manager and
                   m.warehouse_index == index]
        assert members == [module_name(layer['name']) for layer in wh['layers']], wh['warehouse']
        for layer in wh['layers']:
            conv = modules[module_name(layer['name'])]
            assert_layer_matches_layout(conv, layer)
            att = conv.attention
            assert isinstance(att.norm1, nn.BatchNorm1d) and att.fc1.bias is None
            torch.testing.assert_close(att.beta, expected_beta[layer['name']].beta()[0],
                                       rtol=0, atol=0)
    # The layers the release keeps plain are plain here (with the same shapes), and only they.
    plain = {module_name(n): shape for n, _, shape in ref['non_kw_convs_linears']}
    ours = {n: list(m.weight.shape) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and '.attention.' not in n}
    assert ours == plain


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_state_dict_keys_and_shapes_equal_release(name):
    model = release_classifier(name)
    if VARIANTS[name].budget is None:
        assert num_params(model) == layouts()[name]['params_total']
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    ref = statedict_shapes(name)
    converted = dict(zip(mmpretrain_keys(k for k, _ in ref), (tuple(s) for _, s in ref)))
    assert len(converted) == len(ref)
    assert converted == ours


@pytest.mark.parametrize('name, temperature', [('kw1d2x_mobilenetv2_050', 0.6),
                                               ('kw1x_mobilenetv2_050', 0.0),
                                               ('mobilenetv2_050', 0.0)])
def test_converted_release_matches_reference_forward(name, temperature):
    """A (synthetic) released checkpoint computes what the reference computes, block by block.

    Every block gets the reference's input of that block (its trace), so rounding does not
    accumulate through the 17 blocks: the calibrated BatchNorms of the late 1x1 feature maps
    amplify it. In float64; the tolerance covers the reference's float32 beta at t > 0.
    """
    torch.manual_seed(0)
    model = PRETRAIN_MODELS.build(VARIANTS[name].model_cfg()).double().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref_sd = calibrate(name, random_state_dict(name, seed=3), x, temperature=temperature)
    ref_sd = {k: v.double() if v.is_floating_point() else v for k, v in ref_sd.items()}
    model.load_state_dict(convert_keys(ref_sd), strict=True)
    if VARIANTS[name].budget is not None:
        set_temperature(model, temperature)
    x = x.double()
    reference = ReferenceForward(name, ref_sd, temperature)
    with torch.no_grad():
        logits = reference(x)
    assert logits.std() > 0.1  # calibrated: every layer matters
    outputs = [out for _, out in reference.trace]
    backbone = model.backbone
    blocks = [block for layer in backbone.layers[:-1] for block in getattr(backbone, layer)]
    assert len(blocks) == len(outputs) == 17

    def assert_near(ours, expected):
        error = ((ours - expected).abs().max() / expected.abs().max()).item()
        assert error < 1e-5, error

    with torch.no_grad():
        for block, inputs, expected in zip(blocks, [backbone.conv1(x)] + outputs[:-1], outputs):
            assert_near(block(inputs), expected)
        assert_near(model.head(model.neck((backbone.conv2(outputs[-1]), ))), logits)


def test_key_conversion():
    assert to_mmpretrain_key('features.0.1.running_mean') == 'backbone.conv1.bn.running_mean'
    assert to_mmpretrain_key('features.1.conv.1.weight') == 'backbone.layer1.0.conv.1.conv.weight'
    assert to_mmpretrain_key('features.1.conv.2.bias') == 'backbone.layer1.0.conv.1.bn.bias'
    assert to_mmpretrain_key('features.4.conv.3.weight') == 'backbone.layer3.0.conv.2.bn.weight'
    assert (to_mmpretrain_key('features.17.conv.1.0.attention.norm1.weight') ==
            'backbone.layer7.0.conv.1.conv.attention.norm1.weight')
    assert to_mmpretrain_key('features.18.1.weight') == 'backbone.conv2.bn.weight'
    assert to_mmpretrain_key('classifier.weight') == 'head.fc.weight'
    assert to_mmpretrain_key('classifier.1.bias') == 'head.fc.bias'
    assert (to_mmpretrain_key('classifier.1.conv.attention.fc2.bias') ==
            'head.fc.conv.attention.fc2.bias')
    assert (to_mmpretrain_key('warehouse_manager.weights.9') ==
            'backbone.warehouse_manager.weights.9')
    assert (to_mmpretrain_key('warehouse_manager.weights.9', classifier_warehouse=9) ==
            'head.warehouse_manager.weights.0')
    assert find_classifier_warehouse(k for k, _ in statedict_shapes('kw1d2x_mobilenetv2_100')) == 9
    assert find_classifier_warehouse(k for k, _ in statedict_shapes('kw1x_mobilenetv2_100')) is None
    for bad in ('features.19.0.weight', 'features.1.conv.3.weight', 'features.2.conv.4.weight',
                'fc.weight', 'features.0.2.weight'):
        with pytest.raises(KeyError, match='not a key of a reference MobileNetV2'):
            to_mmpretrain_key(bad)


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize('config', sorted(CONFIG_RELEASES))
def test_configs(config):
    release, widen, budget = CONFIG_RELEASES[config]
    cfg = Config.fromfile(os.path.join(CONFIGS, config))
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum, optimizer.weight_decay) == (
        'SGD', 0.1, 0.9, 4e-5)
    assert cfg.train_cfg.max_epochs == 150
    assert [(s.type, s.eta_min, s.end) for s in cfg.param_scheduler] == [
        ('CosineAnnealingLR', 0.0, 150)]
    assert cfg.train_dataloader.batch_size == 32 and cfg.auto_scale_lr.base_batch_size == 256
    pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert pipeline == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs']
    assert cfg.custom_imports == dict(imports=['kw_mm'], allow_failed_imports=False)
    backbone = cfg.model.backbone
    assert backbone.widen_factor == widen
    if budget is None:
        assert backbone.type == 'MobileNetV2' and 'custom_hooks' not in cfg
        assert cfg.model.head.type == 'LinearClsHead'
    else:
        assert backbone.type == 'kw_mm.KWMobileNetV2' and backbone.budget == budget
        assert cfg.custom_hooks == [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=10)]
        PRETRAIN_HOOKS.build(cfg.custom_hooks[0])
        assert cfg.model.head.type == ('kw_mm.KWLinearClsHead' if budget == 0.5 else
                                       'LinearClsHead')
    # Built through the real registry it is the released model, and it classifies.
    model = PRETRAIN_MODELS.build(cfg.model).eval()
    assert num_params(model) == layouts()[release]['params_total']
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32), mode='tensor').shape == (1, 1000)


# --------------------------------------------------------------------------- the KW head
def tiny_classifier(num_classes: int = 5) -> nn.Module:
    return PRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='kw_mm.KWMobileNetV2', widen_factor=0.5, budget=0.5),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='kw_mm.KWLinearClsHead', num_classes=num_classes, in_channels=1280,
                  loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, ))))


def test_head_loss_predict_and_temperature():
    torch.manual_seed(0)
    model = tiny_classifier()
    head = model.head
    assert isinstance(head, KWLinearClsHead)
    # Its own one-warehouse manager: cells [num_classes, 32, 1], M = 40, n = 20.
    assert head.warehouse_manager.summary() == [dict(
        name='classifier', cell_shape=[5, 32, 1], m=40, n=20, b=0.5, num_layers=1)]
    assert head.fc.conv.attention.fc1.out_features == 40  # 1280 / 32
    model.init_weights()  # must not touch the cells or the attention
    cells = head.warehouse_manager.weights[0].detach().clone()
    model.init_weights()
    torch.testing.assert_close(head.warehouse_manager.weights[0], cells, rtol=0, atol=0)

    inputs = torch.rand(2, 3, 32, 32)
    samples = [DataSample().set_gt_label(label) for label in (1, 3)]
    model.train()
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'loss'} and torch.isfinite(losses['loss'])
    losses['loss'].backward()
    assert head.warehouse_manager.weights[0].grad.abs().sum() > 0
    assert head.fc.conv.attention.fc2.weight.grad.abs().sum() > 0
    assert head.fc.conv.bias.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        preds = model(inputs, mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (5, )
    assert preds[0].pred_label.item() in range(5)

    # The temperature reaches the head's attention like the backbone's.
    total = sum(isinstance(m, KWAttention) for m in model.modules())
    assert set_temperature(model, 0.7) == total
    assert head.fc.conv.attention.temperature == 0.7 and get_temperature(model) == 0.7


def test_head_at_temperature_one_is_a_linear_of_the_assigned_cells():
    torch.manual_seed(0)
    head = KWLinearClsHead(num_classes=6, in_channels=64, cell_in_channels=16).eval()
    conv = head.fc.conv
    assert conv.attention.num_mixtures == 4 and conv.attention.num_cells == 2
    with torch.no_grad():
        conv.bias.uniform_(-1, 1)
    set_temperature(head, 1.0)
    alpha = conv.attention.beta[None, :, :-1]
    weight = assemble_kernels_reference(alpha, conv.cells, conv.geometry)[0].reshape(6, 64)
    # b = 1/2: mixtures 0 and 3 hold cells 0 and 1, mixtures 1 and 2 start as zero cells.
    assert weight[:, 16:48].abs().sum() == 0 and weight[:, :16].abs().sum() > 0
    x = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(head((x, )), F.linear(x, weight, conv.bias), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize('kwargs, match', [
    (dict(cell_in_channels=24), r'cell_in_channels must be a positive divisor of in_channels '
     r'\(64\), got 24'),
    (dict(cell_out_channels=4), r'cell_out_channels must be a positive divisor of num_classes '
     r'\(6\), got 4'),
    (dict(num_classes=0), 'num_classes=0 must be a positive integer'),
    (dict(dropout_ratio=1.0), r'dropout_ratio must be in \[0, 1\), got 1.0'),
    (dict(budget=0), r'cell_num_ratio \(budget b\) must be > 0, got 0.0'),
])
def test_head_bad_arguments(kwargs, match):
    kwargs = {'num_classes': 6, 'in_channels': 64, **kwargs}
    with pytest.raises(ValueError, match=match):
        KWLinearClsHead(**kwargs)


# --------------------------------------------------------------------------- behaviour
def test_out_indices_and_shapes():
    model = KWMobileNetV2(widen_factor=0.5, budget=1, out_indices=range(8)).eval()
    assert model.layers == [f'layer{i}' for i in range(1, 8)] + ['conv2']
    channels = [8, 16, 16, 32, 48, 80, 160, 1280]
    sizes = [32, 16, 8, 4, 4, 2, 2, 2]
    with torch.no_grad():
        outs = model(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, c, s, s) for c, s in zip(channels, sizes)]
    assert KWMobileNetV2(widen_factor=0.5, out_indices=(-1, )).out_indices == (7, )


def test_kw4x_at_temperature_one_equals_plain_mobilenet_v2():
    """At t = 1 every attention is one-hot: the network is mmpretrain's MobileNetV2 whose kernels
    are the assigned cells (every 4th cell for b = 4). KW 1x and 1/2x: test_backbone_behaviour."""
    torch.manual_seed(0)
    kw = KWMobileNetV2(widen_factor=0.5, budget=4, out_indices=(3, 7)).eval()
    plain = PRETRAIN_MODELS.build(dict(type='mmpretrain.MobileNetV2', widen_factor=0.5, out_indices=(3, 7)))
    plain.eval()  # mmpretrain's MobileNetV2.train() returns None
    set_temperature(kw, 1.0)
    copy_into_plain_twin(kw, plain)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(kw(x), plain(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_frozen_stages_freeze_handover_warehouses():
    """Freezing follows mmpretrain's stages; the warehouses they draw from freeze with them.
    (Outputs, gradients and norm_eval of frozen stages: test_backbone_behaviour.)"""
    model = KWMobileNetV2(widen_factor=0.5, budget=1, frozen_stages=2)
    model.train()
    # conv1, layer1 and layer2 draw from stages 0, 1 and 2 (layer2.1 is in stage 2); layer3.0
    # hands over into stage 2, so its kernels stay frozen too (its attention trains).
    frozen = {'stage0_conv0', 'stage1_layer_dwconv0', 'stage1_layer_pwconv',
              'stage2_layer_pwconv', 'stage2_layer_dwconv0'}
    specs = model.warehouse_manager.specs
    assert frozen < {s.name for s in specs}
    for spec, cells in zip(specs, model.warehouse_manager.weights):
        assert cells.requires_grad == (spec.name not in frozen), spec.name
    assert model.frozen_modules() == [model.conv1, model.layer1, model.layer2]
    for module in model.frozen_modules():
        assert not any(p.requires_grad for p in module.parameters())
        assert not any(m.training for m in module.modules())
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert all(m.training for m in model.layer3.modules())
    assert model.layer3[0].conv[0].conv.warehouse_name == 'stage2_layer_pwconv'
    # freeze_warehouses=False (the reference detection code): the cells keep training.
    model = KWMobileNetV2(widen_factor=0.5, budget=1, frozen_stages=2, freeze_warehouses=False)
    assert all(w.requires_grad for w in model.warehouse_manager.weights)


def test_with_cp_matches():
    torch.manual_seed(0)
    model = KWMobileNetV2(widen_factor=0.5, budget=0.5)
    checkpointed = KWMobileNetV2(widen_factor=0.5, budget=0.5, with_cp=True)
    checkpointed.load_state_dict(model.state_dict())
    model.eval()
    checkpointed.eval()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out, out_cp = model(x)[0], checkpointed(x)[0]
    torch.testing.assert_close(out, out_cp)
    grad, = torch.autograd.grad(out.sum(), model.warehouse_manager.weights[1])
    grad_cp, = torch.autograd.grad(out_cp.sum(), checkpointed.warehouse_manager.weights[1])
    torch.testing.assert_close(grad, grad_cp)


def test_pretrained_loading_is_strict(tmp_path):
    source = KWMobileNetV2(widen_factor=0.5, budget=1)
    path = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()}},
               path)
    init = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    loaded = KWMobileNetV2(widen_factor=0.5, budget=1, init_cfg=init)
    loaded.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    wrong = KWMobileNetV2(widen_factor=0.5, budget=4, init_cfg=init)
    with pytest.raises(CheckpointMismatchError, match=r'KWMobileNetV2\(widen_factor=0.5, '
                                                      r'budget=4\)'):
        wrong.init_weights()


def test_expert_knobs():
    # Per-kind overrides: a KW 2x with 1x sharing and 1/8 reduction for the depth-wise convs.
    model = KWMobileNetV2(widen_factor=0.5, budget=1, cell_num_ratio=2,
                          reduction=dict(dwconv=1 / 8, default=1 / 16))
    rows = {s.name: s for s in model.warehouse_manager.specs}
    assert all(s.num_cells == 2 * s.num_mixtures for s in rows.values())
    assert rows['stage6_layer_dwconv0'].reduction == 1 / 8
    assert rows['stage6_layer_pwconv'].reduction == 1 / 16
    # KW point-wise convs in stages 5 and 6 of the 1/2x design; no layer sharing.
    model = KWMobileNetV2(widen_factor=0.5, budget=0.5, kw_pwconv_stages=(5, 6),
                          sharing_range=())
    names = [s.name for s in model.warehouse_manager.specs]
    assert 'stage5_layer0_pwconv0' in names and 'stage4_layer3_pwconv0' not in names
    # layer5.0 hands over into stage 4 (plain), layer5.1 and layer6.0 are in stage 5 (KW).
    assert isinstance(model.layer5[0].conv[0].conv, nn.Conv2d)
    assert isinstance(model.layer5[0].conv[1].conv, KWConvNd)  # depth-wise: always KW
    assert all(isinstance(m, KWConvNd) for m in (model.layer5[1].conv[0].conv,
                                                 model.layer6[0].conv[2].conv,
                                                 model.conv2.conv))
    # LayerNorm attentions.
    model = KWMobileNetV2(widen_factor=0.5, attention_norm='LN')
    assert isinstance(model.conv1.conv.attention.norm1, nn.LayerNorm)


@pytest.mark.parametrize('kwargs, match', [
    (dict(widen_factor=0.75), r'widen_factor must be one of \[0.5, 1.0\], got 0.75'),
    (dict(budget=2), r'budget must be one of \[0.5, 1, 4\], got 2'),
    (dict(out_indices=(8, )), r'out_indices must be in \[0, 8\), got 8'),
    (dict(frozen_stages=8), r'frozen_stages must be in \[-1, 7\], got 8'),
    (dict(kw_pwconv_stages=(0, 6)), r'kw_pwconv_stages must hold warehouse stages '
     r'in \[1, 6\], got \(0, 6\)'),
    (dict(cell_num_ratio=dict(pwconv=1)),
     "cell_num_ratio {'pwconv': 1} has no entry for warehouse 'stage0_conv0' and no \"default\""),
    (dict(reduction=dict(pwconv2=0.1, default=1 / 16)),
     r"reduction has entries \['pwconv2'\] that match no warehouse"),
    (dict(attention_norm='GN'), r"norm must be one of \['BN', 'LN'\], got 'GN'"),
])
def test_bad_arguments(kwargs, match):
    kwargs = {'widen_factor': 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        KWMobileNetV2(**kwargs)
