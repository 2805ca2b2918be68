# Mask R-CNN + FPN with mmdet's ResNet-101 wrapped by kw_mm.KWBackbone (KW 1x, the paper's rules
# as for ResNet50), pretrained on ImageNet with configs/kw1x-resnet101_8xb512-300e_in1k.py (the
# wrapped mmpretrain and mmdet ResNets have the same keys). Same recipe as mask-rcnn_kw-r50_1x_coco.py:
#   tools/dist_train.sh configs/mask-rcnn_kw-r101_1x_coco.py 8 \
#       --cfg-options model.backbone.backbone.init_cfg.checkpoint=checkpoints/kw1x-resnet101_in1k.pth
_base_ = './mask-rcnn_r50_1x_coco.py'

pretrained = 'checkpoints/kw1x-resnet101_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWBackbone',
        backbone=dict(
            type='mmdet.ResNet',
            depth=101,
            num_stages=4,
            out_indices=(0, 1, 2, 3),
            # The stem and stage 1 are frozen, their warehouse cells included
            # (freeze_warehouses).
            frozen_stages=1,
            norm_cfg=dict(type='BN', requires_grad=True),
            norm_eval=True,
            style='pytorch',
            # loads strictly: a KW checkpoint of this layout, under its classifier's prefix
            init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
        budget=1,
        static_depth=2,
        stage_blocks=6))
