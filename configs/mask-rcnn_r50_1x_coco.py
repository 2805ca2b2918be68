# Mask R-CNN + FPN, ResNet50 baseline of the paper's Table 3 (box AP 39.6, mask AP 36.4), with
# exactly the recipe of the KW models: 1x schedule, AdamW, DETR-style multi-scale training.
# The backbone is mmpretrain's ResNet, so an mmpretrain / kw_mm ImageNet checkpoint loads as is.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/detection/coco_instance_detr-ms.py',
    './_base_/detection/schedule_adamw-1x.py',
    './_base_/detection/kw_finetune_runtime.py',
]

pretrained = 'checkpoints/resnet50_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[256, 512, 1024, 2048]))
