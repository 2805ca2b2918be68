# Mask R-CNN + FPN with a KW 1x ConvNeXt-Tiny backbone: paper Table 3, box AP 44.8, mask AP 40.6
# (the release's table: 44.7 / 40.6). The released ImageNet checkpoint has the 12-warehouse
# layout ('release'); the paper's Table 14 layout is layout='paper'.
_base_ = './mask-rcnn_convnext-tiny_1x_coco.py'

pretrained = 'checkpoints/kw1x-convnext-tiny-release_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWConvNeXt',
        arch='tiny',
        budget=1,
        layout='release',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        gap_before_final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
