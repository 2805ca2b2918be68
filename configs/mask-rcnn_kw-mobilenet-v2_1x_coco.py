# Mask R-CNN + FPN with a KW 1x MobileNetV2 (1.0x) backbone: paper Table 3, box AP 36.4, mask
# AP 33.7. Same recipe as mask-rcnn_mobilenet-v2_1x_coco.py.
_base_ = './mask-rcnn_mobilenet-v2_1x_coco.py'

pretrained = 'checkpoints/kw1x-mobilenet-v2_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWMobileNetV2',
        widen_factor=1.0,
        budget=1,
        out_indices=(1, 2, 4, 7),
        frozen_stages=2,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
