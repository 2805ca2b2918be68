# Mask R-CNN + FPN with a KW 3/4x ConvNeXt-Tiny backbone (paper Table 14 layout; not released):
# paper Table 3, box AP 44.1, mask AP 40.2.
_base_ = './mask-rcnn_kw-convnext-tiny_1x_coco.py'

pretrained = 'checkpoints/kw3d4x-convnext-tiny_in1k.pth'  # see docs/detection.md
model = dict(backbone=dict(budget=0.75, layout='paper', init_cfg=dict(checkpoint=pretrained)))
