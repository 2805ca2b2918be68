# Mask R-CNN + FPN with an ODConv (4x) MobileNetV2 (1.0x) backbone (the ODConv release's
# od_mobilenetv2_100 4x, converted, or odconv4x-mobilenet-v2_8xb32-150e_in1k.py): paper Table 3,
# box AP 37.2, mask AP 34.5. The DY-Conv MobileNetV2 config with method='odconv': the release's
# detection backbone takes features 3, 6, 13 and 18 (mmpretrain's layer2, layer3, layer5 and
# conv2: out_indices (1, 2, 4, 7)) and freezes features 0-3 (mmpretrain's frozen_stages=2).
# Fine-tuning temperature as the ODConv release: t = 1 throughout (DynamicConvFinetuneHook).
_base_ = './mask-rcnn_dyconv4x-mobilenet-v2_1x_coco.py'

pretrained = 'checkpoints/odconv4x-mobilenet-v2_in1k.pth'  # see docs/detection.md
model = dict(backbone=dict(method='odconv', init_cfg=dict(checkpoint=pretrained)))
