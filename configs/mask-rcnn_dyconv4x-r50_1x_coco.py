# Mask R-CNN + FPN with a DY-Conv (4x) ResNet50 backbone pretrained on ImageNet
# (dyconv4x-resnet50_8xb512-300e_in1k.py): paper Table 3, box AP 39.6, mask AP 36.6. Same recipe
# as mask-rcnn_r50_1x_coco.py.
# Fine-tuning temperature: DY-Conv has no release; its paper tests at t = 1, and kw_mm fine-tunes
# at t = 1 throughout (DynamicConvFinetuneHook), as the ODConv release does for ODConv.
_base_ = './mask-rcnn_r50_1x_coco.py'

pretrained = 'checkpoints/dyconv4x-resnet50_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True, type='kw_mm.DynamicResNet', depth=50, method='dyconv', num_kernels=4,
        out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

custom_hooks = [dict(type='kw_mm.DynamicConvFinetuneHook')]
