# Mask R-CNN + FPN, ResNet50 baseline of the paper's Table 3 (box AP 39.6, mask AP 36.4), with
# exactly the recipe of the KW models: 1x schedule, AdamW, DETR-style multi-scale training.
# The backbone is mmpretrain's ResNet, so an mmpretrain / kw_mm ImageNet checkpoint loads as is.
_base_ = './_base_/detection/mask-rcnn_fpn_kw-finetune-1x_coco.py'

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
