"""The rival backbones (DynamicResNet, DynamicMobileNetV2; KW* as KWMobileNetV2 with
``omni_attention``) and their configs: every config builds through mmpretrain's registry with
the KW paper's parameter count, which layers are dynamic, mmpretrain-compatible keys, freezing,
strict loading and the errors for bad input.

The expected counts are the paper's (Tables 1, 2, 4) and the exact sums of docs/rivals.md
(closed-form per-layer sums, ODConv: the release's models), written here independently.
"""
import os

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmpretrain.models.backbones import MobileNetV2, ResNet
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from kw_mm.cnn import AttentionBatchNorm1d
from kw_mm.cnn.dynamic import (CondConv2d, DyConv2d, MixtureConv2d, ODConv2d,
                               get_softmax_temperature, set_softmax_temperature)
from kw_mm.models import DynamicMobileNetV2, DynamicResNet
from kw_mm.utils.checkpoint import CheckpointMismatchError
from tests.helpers import REPO_ROOT

CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')

#: config -> (paper's total in M, the exact total of the design)
RIVAL_CONFIGS = {
    'dyconv4x-resnet18_8xb32_in1k.py': (45.47, 45_472_052),
    'odconv4x-resnet18_8xb32_in1k.py': (44.90, 44_901_640),
    'condconv8x-resnet18_8xb32_in1k.py': (81.35, 81_353_120),
    'dyconv4x-resnet18_8xb512-300e_in1k.py': (45.47, 45_472_052),
    'odconv4x-resnet18_8xb512-300e_in1k.py': (44.90, 44_901_640),
    'dyconv4x-resnet50_8xb512-300e_in1k.py': (100.88, 100_878_072),
    'odconv4x-resnet50_8xb512-300e_in1k.py': (90.67, 90_670_888),
    'dyconv4x-mobilenet-v2_8xb32-150e_in1k.py': (12.40, 12_404_540),
    'odconv4x-mobilenet-v2_8xb32-150e_in1k.py': (11.52, 11_512_149),
    'dyconv4x-mobilenet-v2-w0.5_8xb32-150e_in1k.py': (4.57, 4_567_338),
    'odconv4x-mobilenet-v2-w0.5_8xb32-150e_in1k.py': (4.44, 4_435_501),
    'ablations/dyconv4x-resnet18_attn-caf_8xb512-300e_in1k.py': (45.47, 45_472_052),
    'ablations/odconv4x-resnet18_attn-caf_8xb512-300e_in1k.py': (44.90, 44_901_640),
    'kwstar4x-mobilenet-v2_8xb32-150e_in1k.py': (12.51, 12_506_955),  # KW* (Table 17)
}
#: The ODConv release's MobileNetV2 1.0 4x has 11.51M; both papers print 11.52M (docs/model_zoo.md).
KNOWN_DIFFERENCES = {'odconv4x-mobilenet-v2_8xb32-150e_in1k.py': 11.51}


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_config(config: str) -> nn.Module:
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, config))
    with torch.device('meta'):
        return PRETRAIN_MODELS.build(cfg.model)


@pytest.mark.parametrize('config', sorted(RIVAL_CONFIGS))
def test_config_has_the_paper_parameter_count(config):
    paper, exact = RIVAL_CONFIGS[config]
    model = build_config(config)
    total = num_params(model)
    assert total == exact
    assert round(total / 1e6, 2) == KNOWN_DIFFERENCES.get(config, paper)


def test_odconv_mobilenet_v2_dynamic_stem_gives_the_printed_count():
    with torch.device('meta'):
        wide = DynamicMobileNetV2('odconv', dynamic_stem=True)
        half = DynamicMobileNetV2('odconv', widen_factor=0.5, dynamic_stem=True)
    head = 1280 * 1000 + 1000
    assert num_params(wide) + head == 11_515_637  # 11.52M as printed
    assert num_params(half) + head == 4_437_421  # 4.44M, unchanged
    assert isinstance(wide.conv1.conv, ODConv2d)


@pytest.mark.parametrize('config, method, dynamic, kinds', [
    ('dyconv4x-resnet18_8xb32_in1k.py', 'dyconv', 19, {DyConv2d}),
    ('odconv4x-resnet18_8xb32_in1k.py', 'odconv', 16, {ODConv2d}),
    ('condconv8x-resnet18_8xb32_in1k.py', 'condconv', 6, {CondConv2d}),
    ('dyconv4x-resnet50_8xb512-300e_in1k.py', 'dyconv', 52, {DyConv2d}),
    ('odconv4x-resnet50_8xb512-300e_in1k.py', 'odconv', 48, {ODConv2d}),
    ('dyconv4x-mobilenet-v2_8xb32-150e_in1k.py', 'dyconv', 51, {DyConv2d}),
    ('odconv4x-mobilenet-v2_8xb32-150e_in1k.py', 'odconv', 51, {ODConv2d}),
])
def test_layer_rules(config, method, dynamic, kinds):
    """Which convolutions are dynamic (docs/rivals.md): stem always static; downsample only
    for DY-Conv; CondConv in the last three blocks."""
    backbone = build_config(config).backbone
    layers = {name: m for name, m in backbone.named_modules() if isinstance(m, MixtureConv2d)}
    assert len(layers) == dynamic
    assert {type(m) for m in layers.values()} == kinds
    assert backbone.method == method
    assert not isinstance(backbone.conv1, MixtureConv2d)
    if 'resnet' in config:
        downsample = [n for n in layers if 'downsample' in n]
        assert bool(downsample) == (method == 'dyconv')
    if method == 'condconv':
        assert sorted({n.rsplit('.', 1)[0] for n in layers}) == ['layer3.1', 'layer4.0',
                                                                   'layer4.1']
        for block, channels in (('layer3.1', 256), ('layer4.0', 256), ('layer4.1', 512)):
            router = backbone.get_submodule(f'{block}.router.fc')
            assert tuple(router.weight.shape) == (8, channels)
        assert not hasattr(backbone.layer3[0], 'router')
        head = build_config(config).head
        assert tuple(head.fc.weight.shape) == (8, 1000, 512)
        assert tuple(head.fc.bias.shape) == (8, 1000)


@pytest.mark.parametrize('rival, plain', [
    (dict(type='kw_mm.DynamicResNet', depth=50, method='dyconv'), ResNet(50)),
    (dict(type='kw_mm.DynamicResNet', depth=18, method='odconv'), ResNet(18)),
    (dict(type='kw_mm.DynamicResNet', depth=18, method='condconv'), ResNet(18)),
    (dict(type='kw_mm.DynamicMobileNetV2', method='odconv'), MobileNetV2(out_indices=(7, ))),
])
def test_keys_are_mmpretrains(rival, plain):
    """Every key of mmpretrain's backbone is ours, with its shape, or the weight of a dynamic
    conv (``[K, *shape]``); ours adds only attentions and routers."""
    with torch.device('meta'):
        ours = PRETRAIN_MODELS.build(rival)
    dynamic = {n for n, m in ours.named_modules() if isinstance(m, MixtureConv2d)}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    for key, value in plain.state_dict().items():
        assert key in mine, key
        if key.rsplit('.', 1)[0] in dynamic:
            assert mine[key][1:] == tuple(value.shape), key
        else:
            assert mine[key] == tuple(value.shape), key
    extra = set(mine) - set(plain.state_dict())
    assert all('.attention.' in k or '.router.' in k for k in extra)


def test_odconv_resnet_keys_follow_the_release_layout():
    with torch.device('meta'):
        model = DynamicResNet(18, 'odconv')
    keys = model.state_dict()
    assert tuple(keys['layer2.0.conv1.weight'].shape) == (4, 128, 64, 3, 3)
    assert tuple(keys['layer4.1.conv2.attention.fc.weight'].shape) == (32, 512, 1, 1)
    assert tuple(keys['layer4.1.conv2.attention.spatial_fc.weight'].shape) == (9, 32, 1, 1)
    assert tuple(keys['layer2.0.downsample.0.weight'].shape) == (128, 64, 1, 1)


@pytest.mark.parametrize('build', [
    lambda: DynamicResNet(18, 'dyconv', out_indices=(0, 1, 2, 3)),
    lambda: DynamicResNet(18, 'condconv', out_indices=(0, 1, 2, 3)),
    lambda: DynamicMobileNetV2('odconv', widen_factor=0.5, out_indices=(1, 2, 4, 7)),
])
def test_forward_backward_and_temperature(build):
    torch.manual_seed(0)
    model = build()
    model.train()
    outs = model(torch.rand(2, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    shapes = [tuple(o.shape) for o in outs]
    assert len(shapes) == len(model.out_indices) and shapes[0][0] == 2
    count = set_softmax_temperature(model, 30.0)
    if model.method == 'condconv':
        assert count == 0
    else:
        assert count == sum(isinstance(m, MixtureConv2d) for m in model.modules())
        assert get_softmax_temperature(model) == 30.0


def test_frozen_stages_and_norm_eval_reach_the_attentions():
    model = DynamicResNet(50, 'odconv', out_indices=(0, 1, 2, 3), frozen_stages=1,
                          norm_eval=True)
    model.train()
    frozen = [model.conv1, model.bn1, model.layer1]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    bns = [m for m in model.modules() if isinstance(m, AttentionBatchNorm1d)]
    assert bns and not any(m.training for m in bns)
    assert model.layer2[0].conv2.attention.training  # norm_eval touches only the norms


def test_rival_checkpoint_for_the_wrong_config_names_both(tmp_path):
    source = DynamicResNet(18, 'odconv')
    path = str(tmp_path / 'odconv4x_r18.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()}}, path)
    target = DynamicResNet(18, 'dyconv', init_cfg=dict(type='Pretrained', checkpoint=path,
                                                       prefix='backbone.'))
    with pytest.raises(CheckpointMismatchError, match=r"DynamicResNet\(method='dyconv'"):
        target.init_weights()
    same = DynamicResNet(18, 'odconv', init_cfg=dict(type='Pretrained', checkpoint=path,
                                                     prefix='backbone.'))
    same.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(same.state_dict()[key], value)


@pytest.mark.parametrize('build, message', [
    (lambda: DynamicResNet(18, 'kw'), r"method must be one of \['dyconv', 'odconv', 'condconv'\], "
                                      r"got 'kw'"),
    (lambda: DynamicMobileNetV2('condconv'), r"method must be one of \['dyconv', 'odconv'\], "
                                             r"got 'condconv'"),
    (lambda: DynamicResNet(18, 'dyconv', num_kernels=8),
     r'num_kernels of dyconv must be one of \[4\], got 8'),
    (lambda: DynamicResNet(18, 'condconv', num_kernels=4),
     r'num_kernels of condconv must be one of \[8\], got 4'),
    (lambda: DynamicResNet(18, 'condconv', reduction=0.25), r'condconv has no option'),
    (lambda: DynamicResNet(20, 'odconv'), r'depth must be one of \[18, 34, 50, 101, 152\]'),
    (lambda: DynamicMobileNetV2('odconv', widen_factor=0.75),
     r'widen_factor must be one of \[0.5, 1.0\], got 0.75'),
    (lambda: DynamicResNet(18, 'dyconv', attention_function='sigmoid'),
     r"attention_function must be one of \['softmax', 'caf'\]"),
])
def test_bad_input_names_what_is_allowed(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_rivals_are_in_the_model_index():
    """configs/metafile.yml lists every rival config with the measured and the printed count
    (not as KW variants: the zoo of KW variants is unchanged)."""
    from kw_mm.apis import get_model, list_variants
    for config, (paper, exact) in RIVAL_CONFIGS.items():
        info = get_model(os.path.splitext(os.path.basename(config))[0])
        assert info.config_path == os.path.realpath(os.path.join(CONFIG_DIR, config))
        assert info.metadata['Parameters'] == exact
        assert info.metadata['Paper Parameters (M)'] == paper
        assert info.variant is None
        assert info.collection in ('DY-Conv', 'ODConv', 'CondConv', 'KernelWarehouse')
    assert not any(v.name.startswith(('dyconv', 'odconv', 'condconv', 'kwstar'))
                   for v in list_variants())
