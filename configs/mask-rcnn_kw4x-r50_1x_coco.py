# Mask R-CNN + FPN with a KW 4x ResNet50 backbone: paper Table 3, box AP 42.4, mask AP 38.9.
_base_ = './mask-rcnn_kw-r50_1x_coco.py'

pretrained = 'checkpoints/kw4x-resnet50_in1k.pth'  # see docs/detection.md
model = dict(backbone=dict(budget=4, init_cfg=dict(checkpoint=pretrained)))
