# Mask R-CNN + FPN with a KW (1x) ResNet18 backbone, fine-tuned on the embedded demo COCO set
# (3 classes: circle, square, triangle; 128-160 px images with polygon masks, written by
# `python tools/make_demo_data.py --out data/demo`). The backbone starts from the classification
# demo (configs/demo/kw1x-resnet18_demo-cls.py); `make demo` passes its checkpoint:
#   python tools/train.py configs/demo/mask-rcnn_kw-r18_demo-coco.py --work-dir work_dirs/demo_det \
#       --cfg-options model.backbone.init_cfg.checkpoint=$(cat work_dirs/demo_cls/last_checkpoint)
#   python tools/test.py configs/demo/mask-rcnn_kw-r18_demo-coco.py \
#       $(cat work_dirs/demo_det/last_checkpoint)
# It runs the path of the COCO configs (mmdet's Mask R-CNN, KWFinetuneHook at t = 0, strict
# Pretrained loading, CocoMetric box and mask AP) in a few minutes on 2 CPU cores: small images,
# fewer proposals and RoIs, AdamW with a higher lr and a short step schedule.
_base_ = '../_base_/detection/mask-rcnn_fpn_kw-finetune-1x_coco.py'

classes = ('circle', 'square', 'triangle')
metainfo = dict(classes=classes, palette=[(220, 20, 60), (0, 128, 0), (0, 0, 192)])
data_root = 'data/demo/coco/'

# ---------------------------------------------------------------- model
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWResNet',
        depth=18,
        budget=1,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_eval=True,
        # The classification demo's checkpoint (make demo sets it from its last_checkpoint).
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/demo_cls/epoch_12.pth',
                      prefix='backbone.')),
    # Narrower FPN and heads than on COCO (128 instead of 256 channels, a 2-conv mask head):
    # on 2 CPU cores the mask head dominates the step otherwise.
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(num_convs=2, in_channels=128, conv_out_channels=128,
                       num_classes=len(classes))),
    # Fewer proposals and sampled RoIs than on COCO: a few objects per small image.
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

# ---------------------------------------------------------------- data
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),  # records scale_factor
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=4e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[6],
         gamma=0.1),
]

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1),
    visualization=dict(draw=False))
log_processor = dict(window_size=5)
# A fixed seed: the demo's box/mask AP is the same on every run of a machine (unseeded, the
# AP of this tiny set moved between 0.05 and 0.09 from run to run).
randomness = dict(seed=0)
