"""Mask R-CNN detection configs: build, recipe, ImageNet twins, train step, pretrained loading.

Every model is built through mmdet's registry from the real config files; inputs are tiny.
"""
import copy
import functools
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from kw_mm.cnn import KWAttention
from kw_mm.apis import get_variant
from kw_mm.utils.checkpoint import CheckpointMismatchError

from tests.helpers import REPO_ROOT as ROOT
CONFIGS = osp.join(ROOT, 'configs')

#: detection config -> (paper variant of its ImageNet backbone, FPN input channels)
DETECTORS = {
    'mask-rcnn_r50_1x_coco.py': ('resnet50', [256, 512, 1024, 2048]),
    'mask-rcnn_kw-r50_1x_coco.py': ('kw1x_resnet50', [256, 512, 1024, 2048]),
    'mask-rcnn_kw4x-r50_1x_coco.py': ('kw4x_resnet50', [256, 512, 1024, 2048]),
    'mask-rcnn_mobilenet-v2_1x_coco.py': ('mobilenetv2_100', [24, 32, 96, 1280]),
    'mask-rcnn_kw-mobilenet-v2_1x_coco.py': ('kw1x_mobilenetv2_100', [24, 32, 96, 1280]),
    'mask-rcnn_kw4x-mobilenet-v2_1x_coco.py': ('kw4x_mobilenetv2_100', [24, 32, 96, 1280]),
    'mask-rcnn_convnext-tiny_1x_coco.py': ('convnext_tiny', [96, 192, 384, 768]),
    'mask-rcnn_kw3d4x-convnext-tiny_1x_coco.py': ('kw3d4x_convnext_tiny', [96, 192, 384, 768]),
    'mask-rcnn_kw-convnext-tiny_1x_coco.py': ('kw1x_convnext_tiny_release',
                                              [96, 192, 384, 768]),
}
DEMO_DET = osp.join(CONFIGS, 'demo', 'mask-rcnn_kw-r18_demo-coco.py')


def mmdet_models():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    import kw_mm  # noqa: F401  (the configs' custom_imports)
    return MODELS


def mmpretrain_models():
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    return MODELS


@functools.lru_cache(maxsize=None)
def _read_cfg(path: str, coco_root: str) -> Config:
    return Config.fromfile(path)


def load_cfg(name: str, **options) -> Config:
    """A fresh copy of a config file (parsed once per COCO_ROOT value), with ``options``."""
    path = name if osp.isabs(name) else osp.join(CONFIGS, name)
    cfg = copy.deepcopy(_read_cfg(path, os.environ.get('COCO_ROOT', '')))
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build_detector(cfg: Config, init_cfg=None):
    """The detector of ``cfg``; the backbone's Pretrained init is replaced by ``init_cfg``."""
    model_cfg = cfg.model.copy()
    model_cfg.backbone = dict(model_cfg.backbone, init_cfg=init_cfg)
    return mmdet_models().build(model_cfg)


def is_norm_output_of_detection(key: str) -> bool:
    """ConvNeXt detection backbones add output norms for stages 0-2 (norm3 is in the twin)."""
    return key.split('.')[0] in ('norm0', 'norm1', 'norm2')


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize('name', sorted(DETECTORS))
def test_config_recipe(name):
    cfg = load_cfg(name)
    assert cfg.default_scope == 'mmdet'
    assert 'kw_mm' in cfg.custom_imports.imports
    assert [h['type'] for h in cfg.custom_hooks] == ['kw_mm.KWFinetuneHook']
    assert not cfg.get('find_unused_parameters', False)
    assert cfg.model.type == 'MaskRCNN' and cfg.model.neck.type == 'FPN'
    assert cfg.model.neck.in_channels == DETECTORS[name][1]
    backbone = cfg.model.backbone
    assert backbone.init_cfg.type == 'Pretrained' and backbone.init_cfg.prefix == 'backbone.'
    # 1x schedule, batch 16 = 8 x 2, AdamW 1e-4 / 0.05
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-4, 0.05)
    step = [s for s in cfg.param_scheduler if s.type == 'MultiStepLR'][0]
    assert step.gamma == 0.1
    if 'convnext' in name:
        assert step.milestones == [9, 11]
        assert cfg.optim_wrapper.constructor == 'LearningRateDecayOptimizerConstructor'
        assert cfg.optim_wrapper.paramwise_cfg == dict(decay_rate=0.95, decay_type='layer_wise',
                                                       num_layers=6)
        assert backbone.drop_path_rate == 0.4 and backbone.layer_scale_init_value == 1.0
    else:
        assert step.milestones == [8, 11]
        assert cfg.optim_wrapper.paramwise_cfg == dict(norm_decay_mult=0.)
        assert backbone.norm_eval is True
        # stem + first stage (ResNet); stem + the 16- and 24-channel stages (MobileNetV2)
        assert backbone.frozen_stages == (2 if 'mobilenet' in name else 1)
    # DETR-style multi-scale training: flip, then resize or resize-crop-resize
    choice = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomChoice'][0]
    assert [[t.type for t in branch] for branch in choice.transforms] == [
        ['RandomChoiceResize'], ['RandomChoiceResize', 'RandomCrop', 'RandomChoiceResize']]
    assert choice.transforms[0][0].scales[0] == (480, 1333)
    assert choice.transforms[0][0].scales[-1] == (800, 1333)


def test_coco_root_is_one_variable_away(monkeypatch):
    monkeypatch.setenv('COCO_ROOT', '/datasets/coco')
    cfg = load_cfg('mask-rcnn_kw-r50_1x_coco.py')
    assert cfg.train_dataloader.dataset.data_root == '/datasets/coco/'
    assert cfg.val_dataloader.dataset.data_root == '/datasets/coco/'
    assert cfg.test_evaluator.ann_file == '/datasets/coco/annotations/instances_val2017.json'
    monkeypatch.delenv('COCO_ROOT')
    assert load_cfg('mask-rcnn_kw-r50_1x_coco.py').val_evaluator.ann_file == \
        'data/coco/annotations/instances_val2017.json'


@pytest.mark.parametrize('name', sorted(DETECTORS))
def test_detector_builds_and_backbone_matches_imagenet_twin(name):
    """Same tensors (names and shapes) and warehouses as the paper's ImageNet backbone."""
    torch.manual_seed(0)
    detector = build_detector(load_cfg(name))
    backbone = detector.backbone
    twin = mmpretrain_models().build(get_variant(DETECTORS[name][0]).backbone)
    twin_state = {k: v.shape for k, v in twin.state_dict().items()}
    own_state = {k: v.shape for k, v in backbone.state_dict().items()}
    extra = sorted(k for k in own_state if k not in twin_state)
    if 'convnext' in name:
        assert extra and all(is_norm_output_of_detection(k) for k in extra), extra
    else:
        assert extra == []
    assert own_state.keys() >= twin_state.keys()
    assert [k for k, shape in twin_state.items() if own_state[k] != shape] == []
    if hasattr(twin, 'warehouse_summary'):
        assert backbone.warehouse_summary() == twin.warehouse_summary()
        assert 'warehouse_manager.weights.0' in own_state


# The KW R50 detector is checked end to end in the training-iteration test below; the KW 4x
# models have the modules of their KW 1x siblings (only the warehouses are larger).
@pytest.mark.parametrize('name', ['mask-rcnn_kw-mobilenet-v2_1x_coco.py',
                                  'mask-rcnn_kw-convnext-tiny_1x_coco.py',
                                  'mask-rcnn_mobilenet-v2_1x_coco.py'])
def test_backbone_feeds_fpn_without_unused_parameters(name):
    """Every trainable backbone tensor reaches the FPN inputs, so DDP needs no
    find_unused_parameters (it fails on the next iteration if a parameter got no gradient)."""
    torch.manual_seed(0)
    backbone = build_detector(load_cfg(name)).backbone
    backbone.train()
    feats = backbone(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == DETECTORS[name][1]
    assert [f.shape[-1] for f in feats] == [8, 4, 2, 1]
    sum(f.mean() for f in feats).backward()
    trainable = [(k, p) for k, p in backbone.named_parameters() if p.requires_grad]
    assert trainable
    assert [k for k, p in trainable if p.grad is None] == []


def test_kw_r50_frozen_stages_and_norm_eval():
    detector = build_detector(load_cfg('mask-rcnn_kw-r50_1x_coco.py'))
    backbone = detector.backbone
    detector.train()
    for module in backbone.stage_modules(0) + backbone.stage_modules(1):
        assert all(not p.requires_grad for p in module.parameters())
        assert not module.training
    # stage 1's warehouse (also used by layer2.0.conv1 and its downsample) is frozen
    frozen = {spec.name: not w.requires_grad
              for spec, w in zip(backbone.warehouse_manager.specs,
                                 backbone.warehouse_manager.weights)}
    assert list(frozen.values()) == [True, False, False, False], frozen
    assert all(p.requires_grad for p in backbone.layer2.parameters())
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and not any(m.training for m in bns)


# ---------------------------------------------------------------------- train step / predict
def tiny_batch(num_classes: int = 80, size: int = 64, seed: int = 0):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(seed)
    np.random.seed(seed)
    return demo_mm_inputs(batch_size=1, image_shapes=[(3, size, size)], num_items=[2],
                          num_classes=num_classes, with_mask=True)


def test_kw_r50_mask_rcnn_train_iteration_and_prediction():
    from mmengine.optim import build_optim_wrapper
    cfg = load_cfg('mask-rcnn_kw-r50_1x_coco.py')
    detector = build_detector(cfg)
    detector.init_weights()
    # The fine-tuning hook's contract: t = 0, and beta is never read (NaN would propagate).
    attentions = [m for m in detector.modules() if isinstance(m, KWAttention)]
    assert attentions and all(m.temperature == 0.0 for m in attentions)
    for m in attentions:
        m.beta.fill_(float('nan'))
    optim_wrapper = build_optim_wrapper(detector, cfg.optim_wrapper)
    # no weight decay on any norm layer, the attention norms included
    decays = {id(p): g['weight_decay'] for g in optim_wrapper.optimizer.param_groups
              for p in g['params']}
    norms = [m for m in detector.modules()
             if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm,
                               torch.nn.GroupNorm))]
    assert norms and all(decays[id(p)] == 0 for m in norms for p in m.parameters()
                         if p.requires_grad)
    assert decays[id(detector.backbone.warehouse_manager.weights[1])] == 0.05

    detector.train()
    data = detector.data_preprocessor(tiny_batch(), True)
    before = detector.backbone.warehouse_manager.weights[1].detach().clone()
    frozen_before = detector.backbone.warehouse_manager.weights[0].detach().clone()
    # one iteration of train_step, with a look at the gradients before the update
    losses = detector(**data, mode='loss')
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    loss, log_vars = detector.parse_losses(losses)
    assert all(np.isfinite(float(torch.as_tensor(v).detach())) for v in log_vars.values())
    optim_wrapper.backward(loss)
    # every trainable tensor of the detector got a gradient: DDP without unused parameters
    trainable = [(k, p) for k, p in detector.named_parameters() if p.requires_grad]
    assert [k for k, p in trainable if p.grad is None] == []
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
    optim_wrapper.step()
    optim_wrapper.zero_grad()
    assert not torch.equal(before, detector.backbone.warehouse_manager.weights[1])
    assert torch.equal(frozen_before, detector.backbone.warehouse_manager.weights[0])

    detector.eval()
    with torch.no_grad():
        results = detector.test_step(tiny_batch(seed=1))
    assert len(results) == 1
    pred = results[0].pred_instances
    assert pred.bboxes.shape[1:] == (4, ) and len(pred.scores) == len(pred.labels)
    assert torch.isfinite(pred.bboxes).all()
    assert pred.masks.shape[1:] == (64, 64)


# ---------------------------------------------------------------------- pretrained loading
def save_runner_checkpoint(model: torch.nn.Module, path: str) -> None:
    """What mmengine's Runner writes: meta (with numpy scalars) and the model's state dict."""
    torch.save(dict(meta=dict(epoch=np.int64(1), iter=np.int64(10), seed=0),
                    state_dict=model.state_dict(), optimizer={}), path)


def classifier(variant: str, num_classes: int = 6):
    torch.manual_seed(1)
    return mmpretrain_models().build(get_variant(variant).model_cfg(num_classes))


@pytest.mark.parametrize('name', ['mask-rcnn_kw-r50_1x_coco.py',
                                  'mask-rcnn_kw-mobilenet-v2_1x_coco.py',
                                  'mask-rcnn_kw-convnext-tiny_1x_coco.py',
                                  'mask-rcnn_r50_1x_coco.py'])
def test_pretrained_init_from_classification_checkpoint(name, tmp_path):
    """A Runner checkpoint of the ImageNet twin classifier (backbone. and head. keys) fills
    every backbone tensor; only ConvNeXt's detection output norms norm0-2 keep their init."""
    from kw_mm.runner.launch import use_safe_checkpoint_loader
    use_safe_checkpoint_loader()  # as tools/train.py: mmengine's loader for the baselines
    cls = classifier(DETECTORS[name][0])
    ckpt = str(tmp_path / 'cls.pth')
    save_runner_checkpoint(cls, ckpt)
    cfg = load_cfg(name, **{'model.backbone.init_cfg.checkpoint': ckpt})
    torch.manual_seed(2)
    detector = mmdet_models().build(cfg.model)
    detector.init_weights()
    expected = cls.backbone.state_dict()
    loaded = detector.backbone.state_dict()
    assert [k for k in loaded if k not in expected and not is_norm_output_of_detection(k)] == []
    assert [k for k in expected if not torch.equal(loaded[k], expected[k])] == []

    if name == 'mask-rcnn_kw-r50_1x_coco.py':
        # a plain backbone state dict (no prefix) works too
        plain = str(tmp_path / 'backbone_only.pth')
        torch.save(cls.backbone.state_dict(), plain)
        backbone = mmdet_models().build(
            dict(cfg.model.backbone,
                 init_cfg=dict(type='Pretrained', checkpoint=plain, prefix='backbone.')))
        backbone.init_weights()
        assert all(torch.equal(backbone.state_dict()[k], v) for k, v in expected.items())


def test_pretrained_init_of_another_budget_fails_naming_both(tmp_path):
    cls = classifier('kw4x_resnet18')
    ckpt = str(tmp_path / 'kw4x_resnet18_cls.pth')
    save_runner_checkpoint(cls, ckpt)
    cfg = load_cfg(DEMO_DET, **{'model.backbone.init_cfg.checkpoint': ckpt})
    detector = mmdet_models().build(cfg.model)
    with pytest.raises(CheckpointMismatchError) as err:
        detector.init_weights()
    msg = str(err.value)
    assert ckpt in msg and 'KWResNet(depth=18, budget=1)' in msg
    assert 'b~4' in msg  # the checkpoint's warehouses have 4x the cells


def test_pretrained_init_missing_checkpoint_names_path(tmp_path):
    missing = str(tmp_path / 'nowhere.pth')
    cfg = load_cfg(DEMO_DET, **{'model.backbone.init_cfg.checkpoint': missing})
    detector = mmdet_models().build(cfg.model)
    with pytest.raises(FileNotFoundError, match=missing):
        detector.init_weights()


# ---------------------------------------------------------------------- data
def test_missing_coco_annotation_file_names_path(tmp_path, monkeypatch):
    from mmdet.registry import DATASETS, METRICS
    mmdet_models()
    monkeypatch.setenv('COCO_ROOT', str(tmp_path))
    cfg = load_cfg('mask-rcnn_kw-r50_1x_coco.py')
    train_ann = osp.join(str(tmp_path), 'annotations', 'instances_train2017.json')
    with pytest.raises(FileNotFoundError, match=train_ann):
        DATASETS.build(cfg.train_dataloader.dataset)
    val_ann = osp.join(str(tmp_path), 'annotations', 'instances_val2017.json')
    with pytest.raises(FileNotFoundError, match=val_ann):
        METRICS.build(cfg.val_evaluator)
