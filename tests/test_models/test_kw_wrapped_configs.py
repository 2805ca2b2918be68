"""The configs of the kw_mm.KWBackbone models (the "KW Wrapped" collection of the model index).

* The pretraining configs follow the paper's 300-epoch recipe exactly as the hand-built KW
  ResNet50 config does: everything but the backbone is that config's (optimizer, schedule,
  batch, augmentation, head and loss, temperature hook), and the wrapped backbone is the plain
  twin's backbone with the options the hand-built KW model takes (budget, drop path).
* The Mask R-CNN config is the hand-built KW ResNet50 detector's recipe with a wrapped mmdet
  ResNet-101, and a classification checkpoint of the wrapped ResNet-101 loads into it strictly.
"""
import inspect
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.helpers import REPO_ROOT
from tests.test_models.test_mask_rcnn_configs import (load_cfg, mmdet_models, mmpretrain_models,
                                                      save_runner_checkpoint)

CONFIGS = osp.join(REPO_ROOT, 'configs')
#: wrapped KW pretraining config -> its plain twin
PRETRAINING = {
    'kw1x-resnet101_8xb512-300e_in1k.py': 'resnet101_8xb512-300e_in1k.py',
    'kw1x-resnext50-32x4d_8xb512-300e_in1k.py': 'resnext50-32x4d_8xb512-300e_in1k.py',
}
#: The hand-built KW ResNet (and its plain twin) on the same recipe.
HAND_BUILT = 'kw1x-resnet50_8xb512-300e_in1k.py'
HAND_BUILT_PLAIN = 'resnet50_8xb512-300e_in1k.py'
DETECTOR = 'mask-rcnn_kw-r101_1x_coco.py'
HAND_BUILT_DETECTOR = 'mask-rcnn_kw-r50_1x_coco.py'


def read(name: str) -> dict:
    return Config.fromfile(osp.join(CONFIGS, name)).to_dict()


def without(cfg: dict, *keys: str) -> dict:
    return {k: v for k, v in cfg.items() if k not in keys}


def effective_arguments(backbone: dict) -> dict:
    """The arguments a backbone config builds with: its own, and the constructor's defaults for
    the rest (a config that spells out a default and one that leaves it out are the same)."""
    from mmdet.registry import MODELS as DET_MODELS
    mmpretrain_models()
    mmdet_models()
    kind = backbone['type']
    scope, _, name = kind.rpartition('.')
    registry = DET_MODELS if scope == 'mmdet' else mmpretrain_models()
    cls = registry.get(name)
    assert cls is not None, kind
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    args = dict(defaults, **without(backbone, 'type'))
    return dict(args, type=f'{cls.__module__}.{cls.__name__}')


@pytest.mark.parametrize('config', sorted(PRETRAINING))
def test_pretraining_recipe_is_the_hand_built_kw_resnets(config):
    ours, hand = read(config), read(HAND_BUILT)
    # optimizer, schedule, batch, data and augmentation, runtime, temperature hook
    assert without(ours, 'model') == without(hand, 'model')
    assert ours['custom_hooks'] == [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=20)]
    # head, loss, batch augmentations (mixup / cutmix), data preprocessor
    assert without(ours['model'], 'backbone') == without(hand['model'], 'backbone')
    backbone, hand_backbone = ours['model']['backbone'], hand['model']['backbone']
    assert backbone['type'] == 'kw_mm.KWBackbone'
    assert backbone['budget'] == hand_backbone['budget']
    for key in ('out_indices', 'drop_path_rate'):
        assert backbone['backbone'][key] == hand_backbone[key], key
    # the plain twins share the recipe too
    assert without(read(PRETRAINING[config]), 'model') == without(read(HAND_BUILT_PLAIN), 'model')


@pytest.mark.parametrize('config', sorted(PRETRAINING))
def test_wrapped_backbone_is_the_plain_twins(config):
    ours, twin = read(config)['model'], read(PRETRAINING[config])['model']
    assert without(ours, 'backbone') == without(twin, 'backbone')
    assert effective_arguments(ours['backbone']['backbone']) == \
        effective_arguments(twin['backbone'])


def test_mask_rcnn_recipe_is_the_hand_built_kw_r50s():
    ours, hand = read(DETECTOR), read(HAND_BUILT_DETECTOR)
    assert without(ours, 'model', 'pretrained') == without(hand, 'model', 'pretrained')
    assert without(ours['model'], 'backbone') == without(hand['model'], 'backbone')
    wrapped, hand_backbone = ours['model']['backbone'], hand['model']['backbone']
    assert wrapped['type'] == 'kw_mm.KWBackbone' and wrapped['budget'] == hand_backbone['budget']
    inner = effective_arguments(wrapped['backbone'])
    for key in ('out_indices', 'frozen_stages', 'norm_eval'):
        assert inner[key] == hand_backbone[key], key
    assert without(inner['init_cfg'], 'checkpoint') == without(hand_backbone['init_cfg'],
                                                               'checkpoint')
    assert inner['init_cfg']['checkpoint'] == ours['pretrained'] == \
        'checkpoints/kw1x-resnet101_in1k.pth'
    assert inner['depth'] == 101 and inner['type'] == 'mmdet.models.backbones.resnet.ResNet'
    # the options of the ImageNet model it is initialized from
    pretrained = read('kw1x-resnet101_8xb512-300e_in1k.py')['model']['backbone']
    assert without(wrapped, 'backbone') == without(pretrained, 'backbone')


def test_mask_rcnn_loads_the_classification_checkpoint_strictly(tmp_path):
    """A Runner checkpoint of the wrapped ResNet-101 classifier (mmpretrain's ResNet) fills
    every tensor of the detector's wrapped mmdet ResNet; a backbone of another budget refuses
    it, naming itself."""
    cls_cfg = Config.fromfile(osp.join(CONFIGS, 'kw1x-resnet101_8xb512-300e_in1k.py'))
    torch.manual_seed(1)
    classifier = mmpretrain_models().build(cls_cfg.model)
    ckpt = str(tmp_path / 'kw1x-resnet101_cls.pth')
    save_runner_checkpoint(classifier, ckpt)
    expected = classifier.backbone.state_dict()
    del classifier

    cfg = load_cfg(DETECTOR, **{'model.backbone.backbone.init_cfg.checkpoint': ckpt})
    torch.manual_seed(2)
    detector = mmdet_models().build(cfg.model)
    detector.init_weights()
    loaded = detector.backbone.state_dict()
    assert loaded.keys() == expected.keys()
    assert [k for k in expected if not torch.equal(loaded[k], expected[k])] == []
    del detector

    cfg = load_cfg(DETECTOR, **{'model.backbone.backbone.init_cfg.checkpoint': ckpt,
                                'model.backbone.budget': 2})
    other = mmdet_models().build(cfg.model)
    with pytest.raises(Exception, match=r'KWBackbone\(ResNet, budget=2\)'):
        other.init_weights()
