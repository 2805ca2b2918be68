# Mask R-CNN + FPN with a KernelWarehouse (KW 1x) ResNet50 backbone pretrained on ImageNet:
# paper Table 3, box AP 41.8, mask AP 38.4. Same recipe as mask-rcnn_r50_1x_coco.py.
#   tools/dist_train.sh configs/mask-rcnn_kw-r50_1x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=checkpoints/kw1x-resnet50_in1k.pth
# No find_unused_parameters: every trainable backbone tensor reaches the FPN.
_base_ = './mask-rcnn_r50_1x_coco.py'

pretrained = 'checkpoints/kw1x-resnet50_in1k.pth'  # see docs/detection.md
model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWResNet',
        depth=50,
        budget=1,
        out_indices=(0, 1, 2, 3),
        # The stem and stage 1 are frozen, their warehouse cells included (the reference
        # detection code kept training them; see freeze_warehouses).
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))
