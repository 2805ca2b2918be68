"""The rivals' Mask R-CNN 1x configs (paper Table 3): recipe, fine-tuning temperature hook,
backbones equal to their ImageNet configs' (so classification checkpoints load strictly), and
every trainable backbone tensor reaching the FPN (no find_unused_parameters)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.helpers import REPO_ROOT
from tests.test_models.test_mask_rcnn_configs import build_detector, load_cfg, mmpretrain_models

#: detection config -> (ImageNet config of its backbone, FPN input channels)
RIVAL_DETECTORS = {
    'mask-rcnn_dyconv4x-r50_1x_coco.py': ('dyconv4x-resnet50_8xb512-300e_in1k.py',
                                          [256, 512, 1024, 2048]),
    'mask-rcnn_odconv4x-r50_1x_coco.py': ('odconv4x-resnet50_8xb512-300e_in1k.py',
                                          [256, 512, 1024, 2048]),
    'mask-rcnn_dyconv4x-mobilenet-v2_1x_coco.py': ('dyconv4x-mobilenet-v2_8xb32-150e_in1k.py',
                                                   [24, 32, 96, 1280]),
    'mask-rcnn_odconv4x-mobilenet-v2_1x_coco.py': ('odconv4x-mobilenet-v2_8xb32-150e_in1k.py',
                                                   [24, 32, 96, 1280]),
}


@pytest.mark.parametrize('name', sorted(RIVAL_DETECTORS))
def test_recipe_and_finetune_temperature(name):
    cfg = load_cfg(name)
    assert [h['type'] for h in cfg.custom_hooks] == ['kw_mm.DynamicConvFinetuneHook']
    assert 'kw_mm' in cfg.custom_imports.imports
    assert not cfg.get('find_unused_parameters', False)
    assert cfg.model.neck.in_channels == RIVAL_DETECTORS[name][1]
    backbone = cfg.model.backbone
    assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
    assert backbone.norm_eval is True
    assert backbone.frozen_stages == (2 if 'mobilenet' in name else 1)
    assert cfg.train_cfg.max_epochs == 12 and cfg.optim_wrapper.optimizer.type == 'AdamW'


@pytest.mark.parametrize('name', sorted(RIVAL_DETECTORS))
def test_backbone_equals_its_imagenet_config(name):
    torch.manual_seed(0)
    with torch.device('meta'):
        backbone = build_detector(load_cfg(name)).backbone
        imagenet = Config.fromfile(osp.join(REPO_ROOT, 'configs', RIVAL_DETECTORS[name][0]))
        twin = mmpretrain_models().build(imagenet.model.backbone)
    own = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    assert own == {k: tuple(v.shape) for k, v in twin.state_dict().items()}


def test_odconv_mobilenet_feeds_fpn_and_every_trainable_tensor_gets_a_gradient():
    torch.manual_seed(0)
    backbone = build_detector(load_cfg('mask-rcnn_odconv4x-mobilenet-v2_1x_coco.py')).backbone
    backbone.train()
    feats = backbone(torch.rand(2, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [24, 32, 96, 1280]
    sum(f.mean() for f in feats).backward()
    trainable = [(k, p) for k, p in backbone.named_parameters() if p.requires_grad]
    assert trainable and [k for k, p in trainable if p.grad is None] == []
    frozen = [k for k, p in backbone.named_parameters() if not p.requires_grad]
    assert any(k.startswith('layer2.') and '.attention.' in k for k in frozen)
