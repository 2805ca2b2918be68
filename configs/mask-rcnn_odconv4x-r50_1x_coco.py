# Mask R-CNN + FPN with an ODConv (4x) ResNet50 backbone pretrained on ImageNet (the ODConv
# release's od_resnet50 4x, converted with tools/model_converters/kw_official_to_mmpretrain.py,
# or odconv4x-resnet50_8xb512-300e_in1k.py): paper Table 3, box AP 42.1, mask AP 38.6. The
# DY-Conv R50 config with method='odconv'.
# Fine-tuning temperature as the ODConv release: t = 1 for the whole run (its detection backbone
# sets 1 at initialization and never anneals): DynamicConvFinetuneHook. Frozen stages freeze
# their ODConv kernels and attentions, norm_eval covers the attention BNs (as the release). The
# release also keeps the unused classifier and sets find_unused_parameters=True; kw_mm's
# backbone has no classifier, so every trainable tensor reaches the FPN and DDP needs neither.
_base_ = './mask-rcnn_dyconv4x-r50_1x_coco.py'

pretrained = 'checkpoints/odconv4x-resnet50_in1k.pth'  # see docs/detection.md
model = dict(backbone=dict(method='odconv', init_cfg=dict(checkpoint=pretrained)))
