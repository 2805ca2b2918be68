# Mask R-CNN + FPN, MobileNetV2 (1.0x) baseline of the paper's Table 3 (box AP 33.8, mask AP
# 31.7). The FPN takes the 24-, 32-, 96- and 1280-channel features (strides 4, 8, 16, 32), and
# the stem and the first two stages are frozen, as in the release (its out_indices (1, 2, 3, 4)
# and frozen_stages=1 count "stages" differently from mmpretrain's MobileNetV2).
_base_ = './_base_/detection/mask-rcnn_fpn_kw-finetune-1x_coco.py'

pretrained = 'checkpoints/mobilenet-v2_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.MobileNetV2',
        widen_factor=1.0,
        out_indices=(1, 2, 4, 7),
        frozen_stages=2,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[24, 32, 96, 1280]))
