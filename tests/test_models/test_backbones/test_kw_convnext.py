"""KWConvNeXt: layouts (release and paper Table 14), checkpoint conversion, configs, behaviour."""
import os

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from kw_mm.cnn import AttentionBatchNorm1d, KWAttention, KWConvNd, set_temperature
from kw_mm.models import KWConvNeXt
from kw_mm.apis import get_variant
from kw_mm.utils.checkpoint import CheckpointMismatchError
from kw_mm.converters.kw_release.convnext import convert_tensor, to_mmpretrain_key
from tests.helpers.kw_checks import assert_layer_matches_layout, copy_into_plain_twin
from tests.helpers.reference_kw import layouts, statedict_shapes

from tests.helpers import REPO_ROOT as ROOT
CONFIGS = os.path.join(ROOT, 'configs')
KW_CONFIGS = {
    'kw1x-convnext-tiny_8xb512-300e_in1k.py': (1.0, 'paper'),
    'kw3d4x-convnext-tiny_8xb512-300e_in1k.py': (0.75, 'paper'),
    'kw1x-convnext-tiny-release_8xb512-300e_in1k.py': (1.0, 'release'),
}
BASELINE_CONFIG = 'convnext-tiny_8xb512-300e_in1k.py'
# A small ConvNeXt (4 stages, third stage splittable into three groups) for behaviour tests.
SMALL = dict(depths=[1, 1, 3, 1], channels=[8, 16, 32, 64])


def build_classifier(config: str) -> nn.Module:
    cfg = Config.fromfile(os.path.join(CONFIGS, config))
    return PRETRAIN_MODELS.build(cfg.model)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def module_name(reference_layer: str) -> str:
    """Our backbone module name of a reference layer (``stages.0.0.dwconv`` ->
    ``stages.0.0.depthwise_conv``), through the checkpoint converter."""
    return to_mmpretrain_key(reference_layer + '.bias')[len('backbone.'):-len('.bias')]


# --------------------------------------------------------------------------- release layout
@pytest.fixture(scope='module')
def release_classifier() -> nn.Module:
    return build_classifier('kw1x-convnext-tiny-release_8xb512-300e_in1k.py')


def test_release_layout_equals_reference(release_classifier):
    ref = layouts()['kw1x_convnext_tiny']
    backbone = release_classifier.backbone
    assert num_params(release_classifier) == ref['params_total']
    specs = backbone.warehouse_manager.specs
    assert len(specs) == len(ref['warehouses'])
    modules = dict(backbone.named_modules())
    for index, (spec, wh) in enumerate(zip(specs, ref['warehouses'])):
        assert (spec.num_mixtures, spec.num_cells) == (wh['m_mixtures'], wh['n_cells'])
        assert list(spec.cell_shape) == wh['cell_shape']
        assert tuple(backbone.warehouse_manager.weights[index].shape) == (
            wh['n_cells'], *wh['cell_shape'])
        # Members, in allocation (module) order.
        members = [name for name, m in backbone.named_modules()
                   if isinstance(m, KWConvNd) and m.warehouse_index == index]
        assert members == [module_name(layer['name']) for layer in wh['layers']]
        for layer in wh['layers']:
            conv = modules[module_name(layer['name'])]
            assert_layer_matches_layout(conv, layer)
            att = conv.attention
            assert isinstance(att.norm1, nn.LayerNorm) and att.fc1.bias is not None
            # beta: one-hot on consecutive cells from the start cell (b = 1).
            beta = att.beta
            assert int(beta.sum()) == layer['temp_bias_ones']
            start = layer['start_cell_idx']
            assert beta.argmax(dim=1).tolist() == list(range(start, start + att.num_mixtures))


def test_release_state_dict_keys_and_shapes(release_classifier):
    ours = {k: tuple(v.shape) for k, v in release_classifier.state_dict().items()}
    ref = statedict_shapes('kw1x_convnext_tiny')
    converted = {to_mmpretrain_key(k): tuple(convert_tensor(k, torch.empty(s)).shape)
                 for k, s in ref}
    assert len(converted) == len(ref)
    assert converted == ours


def test_baseline_state_dict_keys_and_shapes():
    model = build_classifier(BASELINE_CONFIG)
    assert num_params(model) == layouts()['convnext_tiny']['params_total']
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    converted = {to_mmpretrain_key(k): tuple(convert_tensor(k, torch.empty(s)).shape)
                 for k, s in statedict_shapes('convnext_tiny')}
    assert converted == ours


def test_convert_tensor_gamma_and_bad_key():
    gamma = torch.arange(4.).reshape(1, 4, 1, 1)
    assert convert_tensor('stages.0.0.gamma', gamma).shape == (4, )
    weight = torch.randn(3, 2)
    assert convert_tensor('stages.0.0.pwconv1.weight', weight) is weight
    assert to_mmpretrain_key('norm.bias') == 'backbone.norm3.bias'
    assert to_mmpretrain_key('head.weight') == 'head.fc.weight'
    with pytest.raises(KeyError, match='not a key of a reference ConvNeXt'):
        to_mmpretrain_key('stages.0.0.dwconv')
    with pytest.raises(KeyError, match='fc.weight'):
        to_mmpretrain_key('fc.weight')


# --------------------------------------------------------------------------- paper layouts
#: Table 14's m and n per warehouse as the model index records them, by budget.
TABLE14_CONVNEXT = {1.0: get_variant('kw1x_convnext_tiny').table14,
                    0.75: get_variant('kw3d4x_convnext_tiny').table14}


@pytest.mark.parametrize('budget', [1.0, 0.75])
def test_paper_layout_matches_table14(budget):
    model = KWConvNeXt(arch='tiny', budget=budget, layout='paper')
    rows = model.warehouse_summary()
    assert [r['m'] for r in rows] == TABLE14_CONVNEXT[budget]['m']
    assert [r['n'] for r in rows] == TABLE14_CONVNEXT[budget]['n']
    # The third stage's 9 blocks are split into three groups of three.
    for group in range(3):
        for block in range(3):
            conv = model.stages[2][group * 3 + block].pointwise_conv1
            assert conv.warehouse_name == f'stage2.{group}_pw'


def test_paper_layout_parameter_counts():
    head = 768 * 1000 + 1000
    full = num_params(KWConvNeXt(budget=1.0, layout='paper')) + head
    # docs/model_zoo.md (ConvNeXt note): the Table-14 KW 1x layout has 35.92M with the reference attention design.
    assert round(full / 1e6, 2) == 35.92
    # KW 3/4x differs only in the point-wise warehouses of the last two groups (stage2.2 and
    # stage3, three blocks each): cells [C/2, C/2] with n = 48 instead of [C, C] with n = 24,
    # and every point-wise attention has 16 mixtures over 48 + 1 cells instead of 4 over 25.
    delta = 0
    for c in (384, 768):
        delta += 48 * (c // 2) ** 2 - 24 * c ** 2
        for hidden in (max(c // 16, 16), max(4 * c // 16, 16)):  # pwconv1, pwconv2
            delta += 3 * (hidden + 1) * (49 * 16 - 25 * 4)
    three_quarter = num_params(KWConvNeXt(budget=0.75, layout='paper')) + head
    assert three_quarter - full == delta


def test_paper_layout_three_quarter_cells():
    model = KWConvNeXt(arch=SMALL, budget=0.75, layout='paper')
    rows = {r['name']: r for r in model.warehouse_summary()}
    # KW 1/2x on the last two point-wise groups (half-gcd cells, b = 1/2), KW 1x elsewhere.
    assert rows['stage2.2_pw']['cell_shape'] == [16, 16, 1, 1]
    assert rows['stage3_pw']['cell_shape'] == [32, 32, 1, 1]
    assert rows['stage2.2_pw']['b'] == rows['stage3_pw']['b'] == 0.5
    assert rows['stage2.1_pw']['cell_shape'] == [32, 32, 1, 1] and rows['stage2.1_pw']['b'] == 1
    assert all(r['b'] == 1 for name, r in rows.items() if not name.endswith(('2.2_pw', '3_pw')))


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize('config', [BASELINE_CONFIG, *KW_CONFIGS])
def test_configs(config):
    from mmpretrain.registry import HOOKS
    cfg = Config.fromfile(os.path.join(CONFIGS, config))
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.optimizer.lr == 4e-3
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.train_dataloader.batch_size == 512 and cfg.auto_scale_lr.base_batch_size == 4096
    assert cfg.train_cfg.max_epochs == 300
    assert [s.type for s in cfg.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
    assert [a.type for a in cfg.model.train_cfg.augments] == ['Mixup', 'CutMix']
    assert cfg.model.head.loss.type == 'LabelSmoothLoss'
    pipeline = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert 'RandAugment' in pipeline and 'RandomErasing' in pipeline
    assert cfg.custom_imports == dict(imports=['kw_mm'], allow_failed_imports=False)
    hooks = [h.type for h in cfg.custom_hooks]
    assert 'EMAHook' in hooks
    for hook in cfg.custom_hooks:
        hook = dict(hook)
        hook.pop('priority', None)  # taken by Runner.register_hook, not by the hook
        HOOKS.build(hook)
    backbone = cfg.model.backbone
    if config in KW_CONFIGS:
        assert backbone.type == 'kw_mm.KWConvNeXt'
        assert (backbone.budget, backbone.layout) == KW_CONFIGS[config]
        assert backbone.drop_path_rate == 0.3
        assert dict(type='kw_mm.KWTemperatureHook', anneal_epochs=20) in cfg.custom_hooks
        assert 'init_cfg' not in backbone  # mmpretrain's ConvNeXt rules must not leak in
    else:
        assert backbone.type == 'ConvNeXt' and backbone.drop_path_rate == 0.1
        assert 'kw_mm.KWTemperatureHook' not in hooks
    # Build through the real registry and classify a small image.
    cfg.model.backbone.drop_path_rate = 0.0
    model = PRETRAIN_MODELS.build(cfg.model).eval()
    if config in KW_CONFIGS:
        budget, layout = KW_CONFIGS[config]
        assert isinstance(model.backbone, KWConvNeXt)
        assert (model.backbone.budget, model.backbone.layout) == (budget, layout)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32), mode='tensor').shape == (1, 1000)


def test_classifier_init_keeps_attention_init():
    """The config's TruncNormal(Linear) rule must not replace the KW attention init."""
    model = build_classifier('kw1x-convnext-tiny-release_8xb512-300e_in1k.py')
    model.init_weights()
    att = model.backbone.stages[3][0].pointwise_conv2.attention  # fc1: 3072 -> 192
    # Kaiming fan-out: std sqrt(2 / 192) = 0.10; TruncNormal would give 0.02.
    assert 0.08 < att.fc1.weight.std().item() < 0.12
    assert att.fc2.bias.abs().max().item() == 0.0
    assert 0.015 < model.head.fc.weight.std().item() < 0.025  # the head does get TruncNormal
    # A second call (e.g. after loading weights by hand) re-initializes nothing.
    with torch.no_grad():
        att.fc2.bias.fill_(0.5)
    model.init_weights()
    assert torch.all(att.fc2.bias == 0.5)


# --------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize('gap', [True, False])
def test_out_indices_and_shapes(gap):
    model = KWConvNeXt(arch=SMALL, layout='release', out_indices=(0, 1, 2, 3),
                       gap_before_final_norm=gap).eval()
    assert all(hasattr(model, f'norm{i}') for i in range(4))
    outs = model(torch.rand(2, 3, 64, 64))
    assert len(outs) == 4
    for i, out in enumerate(outs):
        size = 16 // 2 ** i
        expected = (2, SMALL['channels'][i]) if gap else (2, SMALL['channels'][i], size, size)
        assert tuple(out.shape) == expected
    default = KWConvNeXt(arch=SMALL, out_indices=-1)
    assert default.out_indices == (3, ) and not hasattr(default, 'norm0')


def test_temperature_one_equals_plain_convnext():
    """At t = 1 every attention is one-hot: the network is mmpretrain's ConvNeXt whose kernels
    are the assigned cells."""
    torch.manual_seed(0)
    kw = KWConvNeXt(arch=SMALL, layout='paper', out_indices=(2, 3)).eval()
    plain = PRETRAIN_MODELS.build(dict(type='mmpretrain.ConvNeXt', arch=SMALL, out_indices=(2, 3),
                                       gap_before_final_norm=True))
    plain.eval()  # mmpretrain's ConvNeXt.train() returns None
    set_temperature(kw, 1.0)
    copy_into_plain_twin(kw, plain, randomize_weights=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(kw(x), plain(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_frozen_stages_and_gradients():
    model = KWConvNeXt(arch=SMALL, layout='paper', frozen_stages=2)
    model.train()
    frozen = {'stem', 'downsample1', 'stage0_dw', 'stage0_pw', 'stage1_dw', 'stage1_pw'}
    for spec, cells in zip(model.warehouse_manager.specs, model.warehouse_manager.weights):
        assert cells.requires_grad == (spec.name not in frozen), spec.name
    for i in range(4):
        trainable = i >= 2
        for module in (model.downsample_layers[i], model.stages[i]):
            assert all(p.requires_grad == trainable for p in module.parameters())
            assert all(m.training == trainable for m in module.modules())
    # One training step with a batch of one sample: every trainable tensor gets a gradient,
    # the frozen stem does not.
    set_temperature(model, 0.3)
    out = model(torch.randn(1, 3, 64, 64))[0]
    out.square().sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert KWConvNeXt(arch=SMALL, frozen_stages=0).warehouse_manager.weights[0].requires_grad


def test_frozen_stages_zero_freezes_nothing_and_output_norms_follow():
    model = KWConvNeXt(arch=SMALL, frozen_stages=0)
    assert all(p.requires_grad for p in model.parameters())
    model = KWConvNeXt(arch=SMALL, frozen_stages=1, out_indices=(0, 1, 2, 3))
    assert not any(p.requires_grad for p in model.norm0.parameters())
    assert all(p.requires_grad for i in (1, 2, 3)
               for p in getattr(model, f'norm{i}').parameters())


def test_pretrained_loading_is_strict(tmp_path):
    source = KWConvNeXt(arch=SMALL, layout='paper')
    path = str(tmp_path / 'cls.pth')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()}},
               path)
    init = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    loaded = KWConvNeXt(arch=SMALL, layout='paper', init_cfg=init)
    loaded.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    # The attentions were loaded, not re-initialized.
    assert any(isinstance(m, KWAttention) for m in loaded.modules())
    wrong = KWConvNeXt(arch=SMALL, layout='release', init_cfg=init)
    with pytest.raises(CheckpointMismatchError, match="layout='release'"):
        wrong.init_weights()


def test_classifier_checkpoint_feeds_detection_backbone(tmp_path):
    """A classifier checkpoint (only norm3) loads into a detection backbone (norm0-norm3):
    the new output norms keep their init, everything else loads strictly."""
    source = KWConvNeXt(arch=SMALL, layout='release')
    with torch.no_grad():
        source.norm3.weight.uniform_(2, 3)
    path = str(tmp_path / 'cls.pth')
    torch.save({'backbone.' + k: v for k, v in source.state_dict().items()}, path)
    init = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    det = KWConvNeXt(arch=SMALL, layout='release', out_indices=(0, 1, 2, 3),
                     gap_before_final_norm=False, init_cfg=init)
    det.init_weights()
    torch.testing.assert_close(det.norm3.weight, source.norm3.weight, rtol=0, atol=0)
    assert torch.equal(det.norm0.weight, torch.ones(SMALL['channels'][0]))
    for key, value in source.state_dict().items():
        assert torch.equal(det.state_dict()[key], value), key
    # A detection backbone without the last output ignores norm3; other gaps still fail.
    KWConvNeXt(arch=SMALL, layout='release', out_indices=(0, 1), init_cfg=init).init_weights()
    state = {'backbone.' + k: v for k, v in source.state_dict().items() if 'gamma' not in k}
    torch.save(state, path)
    missing = r'missing in checkpoint: stages\.0\.0\.gamma'
    with pytest.raises(CheckpointMismatchError, match=missing):
        KWConvNeXt(arch=SMALL, layout='release', out_indices=(0, 1, 2, 3),
                   init_cfg=init).init_weights()


# --------------------------------------------------------------------------- expert knobs
def kw_convs(model: nn.Module) -> dict:
    return {name: m for name, m in model.named_modules() if isinstance(m, KWConvNd)}


def summary(model: KWConvNeXt) -> dict:
    return {r['name']: r for r in model.warehouse_summary()}


def test_release_knobs_spelled_out_build_the_release():
    """The released model's own arguments (layouts.json) give exactly the default build."""
    kwargs = layouts()['kw1x_convnext_tiny']['kwargs_passed']
    explicit = KWConvNeXt(layout='release', reduction=kwargs['reduction'],
                          cell_num_ratio=kwargs['cell_num_ratio'],
                          cell_inplane_ratio=kwargs['cell_inplane_ratio'],
                          cell_outplane_ratio=kwargs['cell_outplane_ratio'],
                          sharing_range=kwargs['sharing_range'],  # 'layer_pwconv'
                          nonlocal_basis_ratio=kwargs['nonlocal_basis_ratio'],
                          attention_norm='LN')
    default = KWConvNeXt(layout='release')
    assert explicit.sharing_range == ('layer', 'pwconv')
    assert explicit.warehouse_summary() == default.warehouse_summary()
    assert {k: v.shape for k, v in explicit.state_dict().items()} == {
        k: v.shape for k, v in default.state_dict().items()}


def test_reduction_knob():
    default = KWConvNeXt(arch=SMALL)
    model = KWConvNeXt(arch=SMALL, reduction=dict(dw=1 / 2, default=1 / 4))
    for spec in model.warehouse_manager.specs:
        assert spec.reduction == (1 / 2 if spec.name.endswith('_dw') else 1 / 4), spec.name
    changed = 0
    for name, conv in kw_convs(model).items():
        ratio = 1 / 2 if conv.warehouse_name.endswith('_dw') else 1 / 4
        hidden = conv.attention.fc1.out_features
        assert hidden == max(int(conv.in_channels * ratio), 16), name
        changed += hidden != kw_convs(default)[name].attention.fc1.out_features
    assert changed >= 4  # e.g. stage3's 64-channel depth-wise conv: 32 hidden units, not 16


def test_cell_num_ratio_knob():
    model = KWConvNeXt(arch=SMALL, cell_num_ratio=2)
    rows = summary(model)
    assert all(r['n'] == 2 * r['m'] and r['b'] == 2 for r in rows.values())
    # b = 2: mixture j of a layer starts on cell start + 2 j (one-to-one, every other cell).
    conv = model.stages[3][0].pointwise_conv2
    assert conv.attention.beta[:, :-1].argmax(1).tolist() == [
        conv.attention.start_cell + 2 * j for j in range(conv.attention.num_mixtures)]
    # A mapping by kind: only the point-wise warehouses double.
    rows = summary(KWConvNeXt(arch=SMALL, cell_num_ratio=dict(pw=2, default=1)))
    assert {name: r['n'] // r['m'] for name, r in rows.items()} == {
        name: 2 if name.endswith('_pw') else 1 for name in rows}


def test_cell_plane_ratio_knobs():
    default = summary(KWConvNeXt(arch=SMALL))
    # Point-wise cells of half the gcd of the input channels: twice the mixtures and cells.
    rows = summary(KWConvNeXt(arch=SMALL, cell_inplane_ratio=dict(pw=0.5, default=1)))
    for name, row in rows.items():
        co, ci = default[name]['cell_shape'][:2]
        half = name.endswith('_pw')
        assert row['cell_shape'][:2] == [co, ci // 2 if half else ci], name
        assert row['m'] == default[name]['m'] * (2 if half else 1) == row['n'], name
    # Half the gcd of the output channels for the downsamples and the point-wise convs.
    rows = summary(KWConvNeXt(arch=SMALL,
                              cell_outplane_ratio=dict(pw=0.5, downsample=0.5, default=1)))
    for name, row in rows.items():
        co, ci = default[name]['cell_shape'][:2]
        half = name.endswith('_pw') or name.startswith('downsample')
        assert row['cell_shape'][:2] == [co // 2 if half else co, ci], name
        assert row['m'] == default[name]['m'] * (2 if half else 1), name


def test_a_given_knob_replaces_the_budgets_preset():
    """KW 3/4x with cell_num_ratio=1: the half-size point-wise cells of its preset stay (the
    plane ratios were not given), but b is 1 everywhere."""
    preset = summary(KWConvNeXt(arch=SMALL, budget=0.75))
    rows = summary(KWConvNeXt(arch=SMALL, budget=0.75, cell_num_ratio=1))
    assert preset['stage3_pw']['b'] == 0.5 and rows['stage3_pw']['b'] == 1
    for name, row in rows.items():
        assert row['cell_shape'] == preset[name]['cell_shape'] and row['m'] == preset[name]['m']
        assert row['n'] == row['m'], name


def test_sharing_range_knob():
    """The reference's fields: 'layer' shares a warehouse among the blocks of a group,
    'pwconv' between the two point-wise convs of a block."""
    base = ['stem', 'downsample1', 'downsample2', 'downsample3']
    release = KWConvNeXt(arch=SMALL, layout='release')
    assert list(summary(release)) == base + [f'stage{i}_{k}' for i in range(4)
                                             for k in ('dw', 'pw')]
    assert list(summary(KWConvNeXt(arch=SMALL, layout='release', sharing_range='layer_pwconv'))
                ) == list(summary(release))

    # No sharing: every conv of every block has its own warehouse, cut by its own channels.
    model = KWConvNeXt(arch=SMALL, layout='paper', sharing_range=())
    rows = summary(model)
    blocks = [(i, j) for i, depth in enumerate(SMALL['depths']) for j in range(depth)]
    assert len(rows) == len(base) + 3 * len(blocks)
    assert all(r['num_layers'] == 1 for r in rows.values())
    conv = model.stages[2][1].pointwise_conv1  # 32 -> 128: one [128, 32] cell, M = 1
    assert conv.warehouse_name == 'stage2.1_layer1_pw1'
    assert rows['stage2.1_layer1_pw1']['cell_shape'] == [128, 32, 1, 1]
    assert rows['stage2.1_layer1_pw1']['m'] == 1
    assert model.stages[2][1].pointwise_conv2.warehouse_name == 'stage2.1_layer1_pw2'
    assert model.stages[2][1].depthwise_conv.warehouse_name == 'stage2.1_layer1_dw'

    # 'layer' only: per stage (release layout) one warehouse per point-wise conv kind.
    rows = summary(KWConvNeXt(arch=SMALL, layout='release', sharing_range=('layer', )))
    assert rows['stage2_pw1']['num_layers'] == rows['stage2_pw2']['num_layers'] == 3
    assert rows['stage2_pw1']['cell_shape'] == [128, 32, 1, 1] and rows['stage2_pw1']['m'] == 3
    assert rows['stage2_dw'] == summary(release)['stage2_dw']
    # 'pwconv' only: per block, the two point-wise convs together.
    rows = summary(KWConvNeXt(arch=SMALL, layout='release', sharing_range=('pwconv', )))
    assert rows['stage2_layer2_pw']['num_layers'] == 2
    assert rows['stage2_layer2_pw']['cell_shape'] == [32, 32, 1, 1]
    assert rows['stage2_layer2_pw']['m'] == 8  # 4 + 4 mixtures of 32 x 32 cells

    # Such a network trains like the released one.
    set_temperature(model, 0.5)
    model(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert all(w.grad is not None for w in model.warehouse_manager.weights)


def test_nonlocal_basis_ratio_knob():
    torch.manual_seed(0)  # the attentions and the input below are random
    default = KWConvNeXt(arch=SMALL, layout='release')
    assert not any(c.attention.use_basis for c in kw_convs(default).values())
    model = KWConvNeXt(arch=SMALL, layout='release', nonlocal_basis_ratio=1 / 4)
    rows = summary(model)
    for name, conv in kw_convs(model).items():
        att, n = conv.attention, rows[conv.warehouse_name]['n']
        local = att.num_mixtures  # b = 1: one local cell per mixture
        assert att.use_basis and att.num_local_cells == local, name
        assert att.num_basis == max(int((n - local) / 4), 16), name
        assert (att.fc3.in_features, att.fc3.out_features) == (att.num_basis, n - local), name
        assert att.fc2.out_features == (local + att.num_basis + 1) * att.num_mixtures, name
        assert att.fc2.bias is None and att.basis_bias.numel() == (n + 1) * att.num_mixtures
    # stage 2's point-wise warehouse (3 blocks x 2 convs x 4 mixtures): 20 cells of the others
    att = model.stages[2][0].pointwise_conv1.attention
    assert (att.num_nonlocal_cells, att.num_basis) == (20, 16)
    set_temperature(model, 0.5)
    out = model(torch.randn(2, 3, 32, 32))[0]
    # A random projection, not out.sum(): the output is layer-normalized, so its plain sum
    # hardly depends on the weights (gradients of 1e-13, or exactly 0 for some seeds).
    (out * torch.randn_like(out)).sum().backward()
    assert att.fc3.weight.grad.abs().sum() > 1e-7


def test_attention_norm_knob():
    for conv in kw_convs(KWConvNeXt(arch=SMALL)).values():
        assert isinstance(conv.attention.norm1, nn.LayerNorm)
        assert conv.attention.fc1.bias is not None
    model = KWConvNeXt(arch=SMALL, attention_norm='BN')
    for conv in kw_convs(model).values():
        assert isinstance(conv.attention.norm1, AttentionBatchNorm1d)
        assert conv.attention.fc1.bias is None  # followed by BatchNorm1d, as in the reference
    model.train()
    model(torch.randn(1, 3, 32, 32))[0].sum().backward()  # a batch of one sample trains


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), r"arch must be one of \['base', 'small', 'tiny'\], got 'huge'"),
    (dict(arch=dict(depths=[3, 3, 9])), "'depths' and 'channels'"),
    (dict(arch=dict(depths=[3, 3, 9], channels=[8, 16, 32])), '4 depths and channels'),
    (dict(budget=0.5), r'budget must be one of \[0.75, 1.0\], got 0.5'),
    (dict(layout='table14'), r"layout must be one of \['paper', 'release'\], got 'table14'"),
    (dict(layout='release', budget=0.75), "layout='release' supports budget 1, got budget=0.75"),
    (dict(arch=dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])), 'only 2 blocks'),
    (dict(out_indices=(4, )), r'out_indices must be in \[0, 4\), got 4'),
    (dict(frozen_stages=5), r'frozen_stages must be in \[-1, 4\], got 5'),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\), got 1.0'),
    (dict(sharing_range=('stage', )),
     r"sharing_range fields must be in \['layer', 'pwconv'\], got \('stage',\)"),
    (dict(sharing_range='layer_conv'),
     r"sharing_range fields must be in \['layer', 'pwconv'\], got \('layer', 'conv'\)"),
    (dict(cell_inplane_ratio=0.5), r"warehouse 'stem': cell_inplane_ratio 0.5 x gcd 3 = 1.5 "
     'input channels per cell is not a whole number'),
    (dict(reduction=dict(pw3=0.1, default=1 / 16)),
     r"reduction has entries \['pw3'\] that match no warehouse"),
    (dict(cell_num_ratio=dict(pw=2)),
     "cell_num_ratio {'pw': 2} has no entry for warehouse 'stem' and no \"default\""),
    (dict(attention_norm='GN'), r"norm must be one of \['BN', 'LN'\], got 'GN'"),
])
def test_bad_arguments(kwargs, match):
    kwargs = {'arch': SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        KWConvNeXt(**kwargs)
