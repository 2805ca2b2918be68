# Mask R-CNN + FPN with a DY-Conv (4x) MobileNetV2 (1.0x) backbone: paper Table 3, box AP 37.0,
# mask AP 34.1. Same recipe as mask-rcnn_mobilenet-v2_1x_coco.py (FPN on the 24-, 32-, 96- and
# 1280-channel features; stem and the first two stages frozen).
# Fine-tuning temperature: t = 1 throughout (DynamicConvFinetuneHook; DY-Conv has no release).
_base_ = './mask-rcnn_mobilenet-v2_1x_coco.py'

pretrained = 'checkpoints/dyconv4x-mobilenet-v2_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True, type='kw_mm.DynamicMobileNetV2', method='dyconv', widen_factor=1.0,
        num_kernels=4, out_indices=(1, 2, 4, 7), frozen_stages=2, norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

custom_hooks = [dict(type='kw_mm.DynamicConvFinetuneHook')]
