# Mask R-CNN + FPN with a KW 4x MobileNetV2 (1.0x) backbone: paper Table 3, box AP 38.0, mask
# AP 34.9.
_base_ = './mask-rcnn_kw-mobilenet-v2_1x_coco.py'

pretrained = 'checkpoints/kw4x-mobilenet-v2_in1k.pth'  # see docs/detection.md
model = dict(backbone=dict(budget=4, init_cfg=dict(checkpoint=pretrained)))
