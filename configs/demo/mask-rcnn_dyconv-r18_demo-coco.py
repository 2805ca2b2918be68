# Mask R-CNN + FPN with a DY-Conv (4x) ResNet18 backbone on the embedded demo COCO set: the demo
# detection path of configs/demo/mask-rcnn_kw-r18_demo-coco.py (strict Pretrained loading of a
# classification checkpoint, CocoMetric box and mask AP) with a rival backbone, fine-tuned at
# the DY-Conv / ODConv test temperature t = 1 (DynamicConvFinetuneHook). Pass the checkpoint of
# a DY-Conv ResNet18 classifier:
#   python tools/train.py configs/demo/mask-rcnn_dyconv-r18_demo-coco.py \
#       --work-dir work_dirs/dy_det --cfg-options model.backbone.init_cfg.checkpoint=path/to/dyconv4x-resnet18.pth
_base_ = './mask-rcnn_kw-r18_demo-coco.py'

model = dict(
    backbone=dict(
        _delete_=True, type='kw_mm.DynamicResNet', depth=18, method='dyconv', num_kernels=4,
        out_indices=(0, 1, 2, 3), frozen_stages=1, norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='work_dirs/demo_dyconv_cls/epoch_12.pth',
                      prefix='backbone.')))

custom_hooks = [dict(type='kw_mm.DynamicConvFinetuneHook')]
