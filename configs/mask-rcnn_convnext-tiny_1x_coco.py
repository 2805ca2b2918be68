# Mask R-CNN + FPN, ConvNeXt-Tiny baseline of the paper's Table 3 (box AP 43.4, mask AP 39.7).
# The ConvNeXt recipe of the KernelWarehouse release (and of mmdet's ConvNeXt configs) differs
# from the ResNet / MobileNetV2 one: stochastic depth 0.4, layer scale starting at 1, layer-wise
# lr decay 0.95 over 6 layer groups, lr x0.1 after epochs 9 and 11, nothing frozen (ConvNeXt
# has no BatchNorm, so norm_eval has nothing to do).
_base_ = './_base_/detection/mask-rcnn_fpn_kw-finetune-1x_coco.py'

pretrained = 'checkpoints/convnext-tiny_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ConvNeXt',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        gap_before_final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='LearningRateDecayOptimizerConstructor',
    # The constructor decays nothing on 1-D tensors (norms, biases, layer scales).
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end={{_base_.max_epochs}}, by_epoch=True,
         milestones=[9, 11], gamma=0.1),
]
