"""The ablation configs of the paper (Tables 5-9, 13) and the KWResNet knobs they set.

Every config in ``configs/ablations`` builds through mmpretrain's registry with the parameter
count printed in the paper (to 0.01M, written here from the paper); the warehouses are those
each ablation describes; bad knob values fail with one line.
"""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from kw_mm.cnn import WarehouseManager
from kw_mm.models import KWResNet
from kw_mm.apis import build_model, get_model

from tests.helpers import REPO_ROOT

ABLATIONS = osp.join(REPO_ROOT, 'configs', 'ablations')
#: config (``configs/ablations/{model}_{setting}_8xb512-300e_in1k.py``) -> the paper's
#: parameters (M), its table and the backbone knob the config sets
_ROWS = [
    ('kw1x-resnet18', 'no-partition', 11.78, 'T5', 'partition', False),
    ('kw1x-resnet18', 'share-layer', 11.81, 'T6', 'sharing_range', 'within-layer'),
    ('kw1x-resnet18', 'share-none', 11.78, 'T6', 'sharing_range', 'none'),
    ('kw1x-resnet50', 'share-same-dim', 26.95, 'T7', 'sharing_range', 'same-dim'),
    ('kw1x-resnet18', 'attn-softmax', 11.93, 'T8', 'attention_function', 'softmax'),
    ('kw1x-resnet18', 'attn-sigmoid', 11.93, 'T8', 'attention_function', 'sigmoid'),
    ('kw1x-resnet18', 'attn-relu-l1', 11.93, 'T8', 'attention_function', 'relu-l1'),
    ('kw1x-resnet18', 'init-none', 11.93, 'T9', 'init_strategy', 'none'),
    ('kw1x-resnet18', 'init-all-cells', 11.93, 'T13', 'init_strategy', 'all-to-one'),
    ('kw4x-resnet18', 'init-4-cells', 45.86, 'T13', 'init_strategy', 'many-to-one'),
    ('kw1d2x-resnet18', 'init-2-mixtures', 7.43, 'T13', 'init_strategy', 'one-to-many'),
]
PAPER = {f'{model}_{setting}_8xb512-300e_in1k.py': (params, table, {knob: value})
         for model, setting, params, table, knob, value in _ROWS}


def test_every_ablation_config_is_listed():
    # configs/ablations also holds the rivals' Table 10 rows (dyconv4x-/odconv4x-..._attn-caf),
    # checked with the rival backbones; the KW rows are all here.
    kw_configs = [name for name in os.listdir(ABLATIONS) if name.startswith('kw')]
    assert sorted(kw_configs) == sorted(PAPER)


@pytest.mark.parametrize('name', sorted(PAPER))
def test_ablation_config_has_the_paper_size(name):
    paper, _, knobs = PAPER[name]
    cfg = Config.fromfile(osp.join(ABLATIONS, name))
    for key, value in knobs.items():
        assert cfg.model.backbone[key] == value
    assert cfg.train_cfg.max_epochs == 300 and cfg.optim_wrapper.optimizer.type == 'AdamW'
    model = build_model(cfg, device='meta')
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6, 2) == paper, params
    # the model index records the measured count, the paper's and the table
    info = get_model(name[:-3])
    assert info.metadata['Parameters'] == params
    assert info.metadata['Paper Parameters (M)'] == paper
    assert info.paper_table == {'T5': 'Table 5', 'T6': 'Table 6', 'T7': 'Table 7', 'T8': 'Table 8',
                                'T9': 'Table 9', 'T13': 'Table 13'}[PAPER[name][1]]


def summary(**kwargs):
    with torch.device('meta'):
        model = KWResNet(depth=kwargs.pop('depth', 18), **kwargs)
    return model.warehouse_summary()


def test_sharing_ranges_give_the_warehouses_they_name():
    # within each layer: one warehouse per convolution (16 3x3 + 3 downsamples), gcd cells
    rows = summary(sharing_range='within-layer')
    assert len(rows) == 19 and {r['num_layers'] for r in rows} == {1}
    assert sorted({r['m'] for r in rows}) == [1, 9]
    # without sharing: the same cells, but each mixture's attention sees only its own cell
    with torch.device('meta'):
        model = KWResNet(depth=18, sharing_range='none')
    conv = model.layer1[0].conv1
    assert conv.attention.fc2.out_features == 2 * conv.attention.num_mixtures
    # same-dimensioned kernels (ResNet50): per stage, one warehouse per block position
    rows = summary(depth=50, sharing_range='same-dim')
    assert [r['name'] for r in rows[:3]] == ['stage0_layer_conv1', 'stage0_layer_conv2',
                                             'stage0_layer_conv0']
    assert [r['m'] for r in rows] == [27, 3, 12, 36, 4, 13, 54, 6, 15, 27, 3, 2]
    # no partition: whole kernels, shared only with kernels of one shape
    rows = summary(partition=False)
    assert [(r['name'], r['m']) for r in rows[:3]] == [
        ('stage0_layer_conv_64x64x3x3', 36), ('stage0_layer_conv_128x64x1x1', 1),
        ('stage0_layer_conv_128x64x3x3', 9)]


def test_defaults_are_the_paper_model():
    """The knobs' defaults leave KW 1x ResNet18 as released: same keys, shapes, warehouses."""
    with torch.device('meta'):
        default = KWResNet(depth=18)
        explicit = KWResNet(depth=18, attention_function='caf', init_strategy='one-to-one',
                            partition=True, sharing_range='within-stage')
    assert [(k, v.shape) for k, v in default.state_dict().items()] == [
        (k, v.shape) for k, v in explicit.state_dict().items()]
    manager = default.warehouse_manager
    assert isinstance(manager, WarehouseManager)
    assert (manager.attention_function, manager.init_strategy, manager.cell_access) == (
        'caf', 'one-to-one', 'shared')


@pytest.mark.parametrize('kwargs,message', [
    (dict(sharing_range='within-block'),
     r"sharing_range must be one of \['within-stage', 'within-layer', 'none', 'same-dim'\] or "
     r"name fields from \['stage', 'layer', 'conv'\], got 'within-block'"),
    (dict(attention_function='tanh'), r"attention_function must be one of .*, got 'tanh'"),
    (dict(init_strategy='orthogonal'), r"init_strategy must be one of .*, got 'orthogonal'"),
    (dict(init_strategy='many-to-one'),
     r"init_strategy 'many-to-one' gives every mixture int\(b\) cells and needs a budget b >= 2, "
     r'got b=1'),
    (dict(budget=0.5, init_strategy='many-to-one'),
     r"init_strategy 'many-to-one' .* needs a budget b >= 2, got b=0.5"),
    (dict(budget=4, init_strategy='one-to-many'),
     r"init_strategy 'one-to-many' .* needs a budget b < 1, got b=4"),
    (dict(budget=0.5, sharing_range='none'),
     r"cell_access='private' needs a whole budget b >= 1, got b=0.5"),
])
def test_bad_knob_values_fail_with_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        KWResNet(depth=18, **kwargs)
    assert '\n' not in str(err.value)
