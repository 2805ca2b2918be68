# What every Mask R-CNN fine-tuning config of kw_mm shares: mmdet's Mask R-CNN R50-FPN 1x COCO
# config with the recipe of the paper (appendix A.1.2) and of the KernelWarehouse release.
# The model configs set the backbone (and the FPN input channels).
# (One `mmdet::` base on purpose: mmengine scans all of mmdet's metafiles for each one.)
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'

# ---------------------------------------------------------------- kw_mm
# KWFinetuneHook keeps the attention temperature at 0 for training, validation and testing:
# the attention initialization is not used while fine-tuning (paper A.1.2).
custom_imports = dict(imports=['kw_mm', 'mmpretrain.models'], allow_failed_imports=False)
custom_hooks = [dict(type='kw_mm.KWFinetuneHook')]

# ---------------------------------------------------------------- data
# COCO 2017 under data/coco. Another location: `--cfg-options data_root=/datasets/coco` with
# kw_mm's tools/train.py and tools/test.py, or the environment variable COCO_ROOT (substituted
# by mmengine when the config is read, so any script sees it):
#   COCO_ROOT=/datasets/coco bash tools/dist_train.sh configs/mask-rcnn_kw-r50_1x_coco.py 8
data_root = '{{$COCO_ROOT:data/coco}}/'

# The DETR / Sparse R-CNN multi-scale training of the release (and of mmdet's ConvNeXt configs):
# after a random flip, either resize the short side to one of 480..800 (long side <= 1333), or
# resize to 400/500/600, crop 384-600 px and resize to one of 480..800.
ms_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
             (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=ms_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=2,  # x 8 GPUs = 16, the paper's batch size
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
# 1x: 12 epochs, lr x0.1 after epochs 8 and 11 (mmdet's 500-iteration linear warm-up kept);
# AdamW lr 1e-4, weight decay 0.05 except on norm layers (BatchNorm / LayerNorm / GroupNorm,
# the KW attention norms included), for a total batch of 16.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.))
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
