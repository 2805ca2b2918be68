"""KWResNet: reference layouts and parameter counts, checkpoint keys and outputs, configs."""
import argparse
import glob
import os

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from kw_mm.cnn import AttentionBatchNorm1d, KWConvNd, set_temperature
from kw_mm.models import KWResNet
from kw_mm.apis import list_variants
from kw_mm.converters.kw_release.resnet import to_mmpretrain_key
from tests.helpers.kw_checks import assert_layer_matches_layout
from tests.helpers.reference_kw import (calibrate, kw_layers, layouts, random_state_dict, reference_logits,
                          statedict_shapes)

from tests.helpers import REPO_ROOT as ROOT
CONFIG_DIR = os.path.join(ROOT, 'configs')
RESNET_VARIANTS = [v for v in list_variants() if v.family in ('resnet18', 'resnet50')]
#: KW and plain ResNet18/50 configs (the rivals' dyconv/odconv/condconv configs:
#: test_dynamic_backbones; the wrapped ResNet-101: test_kw_backbone).
RIVAL_PREFIXES = ('dyconv', 'odconv', 'condconv')
RESNET_CONFIGS = sorted(os.path.basename(p) for depth in (18, 50)
                        for p in glob.glob(os.path.join(CONFIG_DIR, f'*resnet{depth}_*in1k.py'))
                        if not os.path.basename(p).startswith(RIVAL_PREFIXES))


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def kw_members(backbone: nn.Module, index: int) -> list:
    """Names of the KW layers drawing from warehouse ``index``, in module (allocation) order."""
    return [name for name, m in backbone.named_modules()
            if isinstance(m, KWConvNd) and m.warehouse_index == index]


# --------------------------------------------------------------------------- paper variants
def test_every_released_resnet_is_a_paper_variant():
    released = {name for name in layouts() if 'resnet' in name}
    assert {v.official for v in RESNET_VARIANTS} == released
    assert len(RESNET_VARIANTS) == 10


@pytest.mark.parametrize('variant', RESNET_VARIANTS, ids=lambda v: v.name)
def test_paper_variant_equals_reference_layout(variant):
    """Parameters, warehouses, members, attentions and cell assignment of the release."""
    model = PRETRAIN_MODELS.build(variant.model_cfg())
    ref = layouts()[variant.official]
    assert num_params(model) == ref['params_total']

    # Every state-dict key of the release maps to ours, with the same shape, and back.
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {to_mmpretrain_key(k): tuple(s) for k, s in statedict_shapes(variant.official)}
    assert theirs == ours

    backbone = model.backbone
    if variant.budget is None:
        assert not any(isinstance(m, KWConvNd) for m in model.modules())
        return
    assert isinstance(backbone, KWResNet)
    # The layers that stay normal convolutions (and the classifier).
    plain = [[name, type(m).__name__, list(m.weight.shape)] for name, m in
             backbone.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
             and '.attention.' not in name]
    plain.append(['fc', 'Linear', list(model.head.fc.weight.shape)])
    assert plain == ref['non_kw_convs_linears']

    specs = backbone.warehouse_manager.specs
    assert len(specs) == len(ref['warehouses'])
    modules = dict(backbone.named_modules())
    expected_beta = kw_layers(variant.official)  # the assignment rule, applied to the release
    for index, (spec, wh) in enumerate(zip(specs, ref['warehouses'])):
        assert (spec.num_mixtures, spec.num_cells) == (wh['m_mixtures'], wh['n_cells'])
        assert list(spec.cell_shape) == wh['cell_shape']
        assert spec.cell_num_ratio == wh['cell_num_ratio'] == variant.budget
        assert spec.reduction == wh['reduction']
        assert kw_members(backbone, index) == [layer['name'] for layer in wh['layers']]
        for layer in wh['layers']:
            conv = modules[layer['name']]
            assert_layer_matches_layout(conv, layer)
            att = conv.attention
            if layer['num_basis'] is None:
                assert not att.use_basis
            else:
                assert att.use_basis and att.num_basis == layer['num_basis']
                assert att.num_local_cells == layer['num_local_cell']
            # beta: one 1 per mixture, at the cells the paper's rule assigns from the start cell.
            beta = att.beta
            assert beta.sum(dim=1).eq(1).all() and int(beta.sum()) == layer['temp_bias_ones']
            beta_ref, _ = expected_beta[layer['name']].beta()
            assert torch.equal(beta, beta_ref), layer['name']
        # No cell is handed to two mixtures; b <= 1 hands out every cell, b > 1 every b-th.
        taken = torch.cat([modules[layer['name']].attention.beta[:, :-1].nonzero()[:, 1]
                           for layer in wh['layers']])
        step = int(max(variant.budget, 1))
        assert sorted(taken.tolist()) == list(range(0, wh['n_cells'], step))


@pytest.mark.parametrize('name', ['resnet18', 'resnet50', 'kw1x_resnet18', 'kw1d2x_resnet50'])
def test_converted_release_matches_reference_forward(name):
    """A (synthetic) released checkpoint, keys mapped by to_mmpretrain_key, gives the logits of
    the reference forward (tests/reference_kw.py).

    Float64, t = 0.5 and BatchNorm statistics calibrated on a batch of four 48 px images: with
    random weights, smaller batches or t = 0 make the network chaotic (inputs 1e-13 apart give
    logits 1e-1 apart), which would hide the comparison.
    """
    variant = next(v for v in RESNET_VARIANTS if v.official == name)
    model = PRETRAIN_MODELS.build(variant.model_cfg()).double().eval()
    ref_sd = {k: v.double() if v.is_floating_point() else v
              for k, v in random_state_dict(name, seed=1).items()}
    x = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(0)).double()
    t = 0.5 if variant.budget else 0.0
    sd = calibrate(name, ref_sd, x, t)
    model.load_state_dict({to_mmpretrain_key(k): v for k, v in sd.items()}, strict=True)
    if variant.budget:
        set_temperature(model, t)
    with torch.no_grad():
        ours = model(x, mode='tensor')
    expected = reference_logits(name, sd, x, temperature=t)
    assert 0.1 < expected.std() < 10
    torch.testing.assert_close(ours, expected, rtol=1e-8, atol=1e-8)


def test_to_mmpretrain_key():
    assert to_mmpretrain_key('warehouse_manager.weights.3') == \
        'backbone.warehouse_manager.weights.3'
    assert to_mmpretrain_key('layer2.0.downsample.1.running_var') == \
        'backbone.layer2.0.downsample.1.running_var'
    assert to_mmpretrain_key('layer1.0.conv2.attention.basis_bias') == \
        'backbone.layer1.0.conv2.attention.basis_bias'
    assert to_mmpretrain_key('fc.bias') == 'head.fc.bias'
    for bad in ('head.weight', 'layer5.0.conv1.weight', 'module.conv1.weight', 'fc.scale'):
        with pytest.raises(KeyError, match=f"'{bad}' is not a key of a reference ResNet"):
            to_mmpretrain_key(bad)


# --------------------------------------------------------------------------- other depths
@pytest.mark.parametrize('depth', [34, 101, 152])
def test_other_depths_have_mmpretrain_names_and_handover(depth):
    """Depths without a release: the same module names as mmpretrain's ResNet and one warehouse
    per stage with the handover."""
    kw = KWResNet(depth=depth, budget=0.5)
    plain = PRETRAIN_MODELS.build(dict(type='mmpretrain.ResNet', depth=depth))
    kw_convs = {name for name, m in kw.named_modules() if isinstance(m, KWConvNd)}
    ours = {k for k in kw.state_dict() if '.attention.' not in k
            and not k.startswith('warehouse_manager.')} | {n + '.weight' for n in kw_convs}
    assert ours == set(plain.state_dict())
    assert len(kw.warehouse_manager.specs) == 4
    bottleneck = depth > 34
    for stage in range(4):
        members = kw_members(kw, stage)
        own = {n for n in kw_convs if n.startswith(f'layer{stage + 1}.')} - {
            f'layer{stage + 1}.0.conv1', f'layer{stage + 1}.0.downsample.0'}
        handed = {f'layer{stage + 2}.0.conv1', f'layer{stage + 2}.0.downsample.0'}
        if stage == 0 and not bottleneck:
            own.add('layer1.0.conv1')
        assert set(members) == own | (handed if stage < 3 else set())
    plain_convs = {n for n, m in kw.named_modules() if isinstance(m, nn.Conv2d)}
    expected_plain = {'conv1'} | ({'layer1.0.conv1', 'layer1.0.downsample.0'}
                                  if bottleneck else set())
    assert plain_convs == expected_plain


def test_frozen_handover_warehouse():
    """frozen_stages=1 freezes the stem, layer1 and stage 0's warehouse, which layer2.0.conv1
    and layer2.0.downsample.0 also draw from; their attentions keep training."""
    model = KWResNet(depth=18, budget=1, frozen_stages=1)
    cells = model.warehouse_manager.weights
    assert [w.requires_grad for w in cells] == [False, True, True, True]
    assert not any(p.requires_grad for m in (model.conv1, model.bn1, model.layer1)
                   for p in m.parameters())
    assert model.layer2[0].conv1.warehouse_index == 0
    assert model.layer2[0].downsample[0].warehouse_index == 0
    assert all(p.requires_grad for p in model.layer2.parameters())
    reference = KWResNet(depth=18, budget=1, frozen_stages=1, freeze_warehouses=False)
    assert all(w.requires_grad for w in reference.warehouse_manager.weights)
    assert not any(p.requires_grad for p in reference.layer1.parameters())
    assert all(not w.requires_grad for w in
               KWResNet(depth=18, budget=1, frozen_stages=4).warehouse_manager.weights)


def test_reference_style_sharing_range_and_drop_path():
    # The reference's config string 'layer_conv' means ('layer', 'conv').
    model = KWResNet(depth=18, budget=1, sharing_range='layer_conv', drop_path_rate=0.1)
    assert [s.name for s in model.warehouse_manager.specs] == [
        f'stage{i}_layer_conv' for i in range(4)]
    # Drop path: the same rate in every block (as the reference), not increasing with depth.
    rates = [block.drop_path.drop_prob for layer in (model.layer1, model.layer4)
             for block in layer]
    assert rates == [0.1] * 4
    # Sharing by stage only per conv index: conv0 (conv1 and downsample) apart from conv1.
    split = KWResNet(depth=18, budget=1, sharing_range=('layer', ))
    assert [s.name for s in split.warehouse_manager.specs][:2] == [
        'stage0_layer_conv0', 'stage0_layer_conv1']


def kw_convs(model: nn.Module) -> dict:
    return {name: m for name, m in model.named_modules() if isinstance(m, KWConvNd)}


def m_and_n(model: KWResNet) -> tuple:
    rows = model.warehouse_summary()
    return [r['m'] for r in rows], [r['n'] for r in rows]


def test_cell_ratio_knobs():
    """Cell ratios scale the cell shape from the gcd of the warehouse's channels; m follows
    and n = int(m * b). Paper Table 14 gives the numbers: ResNet18 1x m = n = 56, 47, 47, 27;
    its 1/2x cells (ratios 1/2) make m four times as large."""
    default = KWResNet(depth=18, budget=1)
    assert m_and_n(default) == ([56, 47, 47, 27], [56, 47, 47, 27])
    assert [r['cell_shape'] for r in default.warehouse_summary()] == [
        [c, c, 1, 1] for c in (64, 128, 256, 512)]

    half_in = KWResNet(depth=18, budget=1, cell_inplane_ratio=0.5)
    assert [r['cell_shape'] for r in half_in.warehouse_summary()] == [
        [c, c // 2, 1, 1] for c in (64, 128, 256, 512)]
    assert m_and_n(half_in) == ([112, 94, 94, 54], [112, 94, 94, 54])
    half_out = KWResNet(depth=18, budget=1, cell_outplane_ratio=0.5)
    assert [r['cell_shape'] for r in half_out.warehouse_summary()] == [
        [c // 2, c, 1, 1] for c in (64, 128, 256, 512)]
    assert m_and_n(half_out) == ([112, 94, 94, 54], [112, 94, 94, 54])
    both = KWResNet(depth=18, budget=1, cell_inplane_ratio=0.5, cell_outplane_ratio=0.5)
    assert m_and_n(both) == ([224, 188, 188, 108], [224, 188, 188, 108])

    # Budget 1/2 defaults to ratios 1/2 (the release); an input ratio of 1 gives cells of the
    # whole input gcd instead.
    assert m_and_n(KWResNet(depth=18, budget=0.5)) == (
        [224, 188, 188, 108], [112, 94, 94, 54])
    whole_in = KWResNet(depth=18, budget=0.5, cell_inplane_ratio=1)
    assert whole_in.warehouse_summary()[0]['cell_shape'] == [32, 64, 1, 1]
    assert m_and_n(whole_in) == ([112, 94, 94, 54], [56, 47, 47, 27])
    # With whole cells on both sides a 3x3 layer has 9 mixtures, which the one-to-one rule of
    # b = 1/2 cannot serve from int(m / 2) cells: refused with the rule, not a silent misfit.
    with pytest.raises(ValueError, match=r"warehouse 'stage0_layer_conv' \(b=0.5, m=56, n=28\) "
                       r'ran out of cells .* k = int\(1 / b\) = 2'):
        KWResNet(depth=18, budget=0.5, cell_inplane_ratio=1, cell_outplane_ratio=1)
    # Every layer's mixtures follow its own cuts: layer4.0.conv2 (512 -> 512, 3x3).
    conv = kw_convs(half_in)['layer4.0.conv2']
    assert conv.attention.num_mixtures == 9 * 1 * 2
    with pytest.raises(ValueError, match="cell_inplane_ratio 0.3 x gcd 64 = 19.2 input "
                       'channels per cell is not a whole number'):
        KWResNet(depth=18, budget=1, cell_inplane_ratio=0.3)


def test_nonlocal_basis_ratio_knob():
    """The non-local basis is on by default only for Bottleneck ResNets below budget 1 (the
    released ResNet50 KW 1/2x, ratio 1/16); the argument turns it on or off anywhere."""
    small = dict(depth=18, budget=0.5, stem_channels=16, base_channels=16)
    assert not any(c.attention.use_basis for c in kw_convs(KWResNet(**small)).values())
    model = KWResNet(**small, nonlocal_basis_ratio=1 / 8)
    rows = model.warehouse_summary()
    for name, conv in kw_convs(model).items():
        att, n = conv.attention, rows[conv.warehouse_index]['n']
        local = int(0.5 * att.num_mixtures)  # L = int(b * M)
        assert att.use_basis and att.num_local_cells == local, name
        assert att.num_basis == max(int((n - local) / 8), 16), name
        assert (att.fc3.in_features, att.fc3.out_features) == (att.num_basis, n - local), name
        assert att.fc2.out_features == (local + att.num_basis + 1) * att.num_mixtures, name
        assert att.fc2.bias is None
    # layer1.0.conv1 (16 -> 16, 3x3, cells [8, 8]): M = 36, L = 18, n = 112 of stage 0
    att = model.layer1[0].conv1.attention
    assert (att.num_mixtures, att.num_local_cells, rows[0]['n']) == (36, 18, 112)
    assert att.num_basis == max(int((112 - 18) / 8), 16) == 16
    set_temperature(model, 0.5)
    model(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert att.fc3.weight.grad.abs().sum() > 0 and att.basis_bias.grad is not None

    # The release's ResNet50 1/2x default is ratio 1/16; 1 switches the basis off.
    r50 = dict(depth=50, budget=0.5, stem_channels=16, base_channels=16)
    default = kw_convs(KWResNet(**r50))
    assert all(c.attention.use_basis for c in default.values())
    explicit = kw_convs(KWResNet(**r50, nonlocal_basis_ratio=1 / 16))
    assert {k: c.attention.num_basis for k, c in explicit.items()} == {
        k: c.attention.num_basis for k, c in default.items()}
    off = kw_convs(KWResNet(**r50, nonlocal_basis_ratio=1.0))
    assert not any(c.attention.use_basis for c in off.values())
    assert all(c.attention.fc2.bias is not None for c in off.values())


def test_attention_norm_knob():
    small = dict(depth=18, budget=1, stem_channels=16, base_channels=16)
    for conv in kw_convs(KWResNet(**small)).values():
        assert isinstance(conv.attention.norm1, AttentionBatchNorm1d)
        assert conv.attention.fc1.bias is None  # followed by BatchNorm1d, as the reference
    model = KWResNet(**small, attention_norm='LN')
    for conv in kw_convs(model).values():
        assert isinstance(conv.attention.norm1, nn.LayerNorm)
        assert conv.attention.fc1.bias is not None
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    model.train()
    set_temperature(model, 0.5)
    model(torch.randn(1, 3, 64, 64))[0].sum().backward()  # layer4's 2x2 map: its BN trains
    assert all(c.attention.norm1.weight.grad is not None for c in kw_convs(model).values())
    with pytest.raises(ValueError, match=r"norm must be one of \['BN', 'LN'\], got 'GN'"):
        KWResNet(**small, attention_norm='GN')


def test_init_weights_keeps_kw_initialization():
    """The classifier's init (mmpretrain's head rule) must leave the backbone untouched."""
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, 'kw1x-resnet18_8xb512-300e_in1k.py'))
    model = PRETRAIN_MODELS.build(cfg.model)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.init_weights()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The cells of the last stage (three 3x3 layers of 512 channels, b = 1) keep the reference
    # init: Kaiming fan-out of each layer's slice, std sqrt(2 / (9 * 512)) as a plain 3x3 conv.
    cells = model.backbone.warehouse_manager.weights[3]
    assert abs(cells.std().item() / (2 / (9 * 512))**0.5 - 1) < 0.05


# --------------------------------------------------------------------------- configs
def config_expectation(config: str) -> dict:
    """What a ResNet config must contain, from its name (``kw1d2x-resnet18_8xb512-300e_...``)."""
    model = config.split('_')[0]
    official = model.replace('-', '_')
    long = '-300e' in config
    ref = layouts()[official]
    return dict(official=official, long=long, kw=model.startswith('kw'),
                depth=int(model.split('resnet')[1]),
                drop_path=ref['kwargs_passed']['drop_path'] if long else 0.0,
                params=ref['params_total'],
                budget=ref['kwargs_passed']['cell_num_ratio'])


def test_resnet_configs_are_complete():
    expected = {'resnet18_8xb32_in1k.py'} | {
        f'kw{b}-resnet18_8xb32_in1k.py' for b in ('1d2x', '1x', '2x', '4x')} | {
        f'{p}resnet18_8xb512-300e_in1k.py' for p in ('', 'kw1d4x-', 'kw1d2x-', 'kw1x-',
                                                      'kw2x-', 'kw4x-')} | {
        f'{p}resnet50_8xb512-300e_in1k.py' for p in ('', 'kw1d2x-', 'kw1x-', 'kw4x-')}
    assert set(RESNET_CONFIGS) == expected


@pytest.mark.parametrize('config', RESNET_CONFIGS)
def test_config_recipe_and_model(config):
    exp = config_expectation(config)
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, config))
    assert cfg.custom_imports == dict(imports=['kw_mm'], allow_failed_imports=False)
    optimizer = cfg.optim_wrapper.optimizer
    pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert {'RandomResizedCrop', 'RandomFlip'} <= set(pipeline)
    if exp['long']:  # Table 2: ConvNeXt's recipe
        assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 4e-3, 0.05)
        assert tuple(optimizer.betas) == (0.9, 0.999)
        assert cfg.optim_wrapper.paramwise_cfg == dict(
            norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0)
        warmup, cosine = cfg.param_scheduler
        assert (warmup.type, warmup.end, warmup.convert_to_iter_based) == ('LinearLR', 20, True)
        assert (cosine.type, cosine.begin, cosine.end, cosine.eta_min) == (
            'CosineAnnealingLR', 20, 300, 0.0)
        assert cfg.train_cfg.max_epochs == 300
        assert cfg.train_dataloader.batch_size == 512 and cfg.auto_scale_lr.base_batch_size == 4096
        assert 'RandAugment' in pipeline
        erasing = next(t for t in cfg.train_dataloader.dataset.pipeline
                       if t.type == 'RandomErasing')
        assert erasing.erase_prob == 0.25
        assert [(a.type, a.alpha) for a in cfg.model.train_cfg.augments] == [('Mixup', 0.8),
                                                                              ('CutMix', 1.0)]
        assert (cfg.model.head.loss.type, cfg.model.head.loss.label_smooth_val) == (
            'LabelSmoothLoss', 0.1)
        anneal = 20
    else:  # Table 1: the traditional recipe
        assert (optimizer.type, optimizer.lr, optimizer.momentum, optimizer.weight_decay) == (
            'SGD', 0.1, 0.9, 1e-4)
        assert [(s.type, s.milestones) for s in [cfg.param_scheduler]] == [
            ('MultiStepLR', [30, 60, 90])]
        assert cfg.train_cfg.max_epochs == 100
        assert cfg.train_dataloader.batch_size == 32 and cfg.auto_scale_lr.base_batch_size == 256
        assert 'RandAugment' not in pipeline and 'augments' not in cfg.model.get('train_cfg', {})
        assert cfg.model.head.loss.type == 'CrossEntropyLoss'
        anneal = 10
    backbone = cfg.model.backbone
    assert backbone.depth == exp['depth']
    assert backbone.get('drop_path_rate', 0.0) == exp['drop_path']
    hooks = cfg.get('custom_hooks', [])
    if exp['kw']:
        assert backbone.type == 'kw_mm.KWResNet' and backbone.budget == exp['budget']
        assert hooks == [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=anneal)]
        for hook in hooks:
            PRETRAIN_HOOKS.build(dict(hook))
    else:
        assert backbone.type == 'ResNet' and not hooks

    model = PRETRAIN_MODELS.build(cfg.model).eval()
    assert num_params(model) == exp['params']
    assert isinstance(model.backbone, KWResNet) == exp['kw']
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32), mode='tensor').shape == (1, 1000)


def test_plain_mmengine_data_root_override_takes_one_pair_per_dataloader():
    """With mmengine alone (``DictAction`` + ``merge_from_dict``), moving the data takes one
    ``{split}_dataloader.dataset.data_root=...`` pair per dataloader: the base config's
    ``data_root`` was already copied into every dataloader. The single ``data_root=PATH``
    override of tools/train.py and tools/test.py is tested in tests/test_tools.py."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    root = '/datasets/in1k'
    args = parser.parse_args(['--cfg-options'] + [
        f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')])

    def data_roots(node) -> list:
        if isinstance(node, dict):
            found = [v for k, v in node.items() if k == 'data_root']
            return found + [r for v in node.values() for r in data_roots(v)]
        if isinstance(node, (list, tuple)):
            return [r for v in node for r in data_roots(v)]
        return []

    for config in ('kw1x-resnet18_8xb32_in1k.py', 'kw1x-resnet50_8xb512-300e_in1k.py'):
        cfg = Config.fromfile(os.path.join(CONFIG_DIR, config))
        assert set(data_roots(cfg.to_dict())) == {'data/imagenet'}
        cfg.merge_from_dict(args.cfg_options)
        roots = data_roots(cfg.to_dict())
        assert len(roots) == 3 and set(roots) == {root}


def test_300e_weight_decay_follows_the_reference_rule():
    """The reference trainer (ConvNeXt's) decays every tensor except 1-D ones and biases: the
    cells and attention weights decay, norms, biases and the non-local basis bias do not."""
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(os.path.join(CONFIG_DIR, 'kw1d2x-resnet50_8xb512-300e_in1k.py'))
    model = PRETRAIN_MODELS.build(cfg.model)
    optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay = {id(p): group['weight_decay'] for group in optimizer.param_groups
             for p in group['params']}
    names = dict(model.named_parameters())
    assert len(decay) == len(names)
    for name, param in names.items():
        no_decay = param.dim() == 1 or name.endswith('.bias')
        assert decay[id(param)] == (0.0 if no_decay else 0.05), name
    assert any(n.endswith('basis_bias') for n in names)
