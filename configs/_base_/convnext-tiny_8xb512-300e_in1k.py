# The 300-epoch ConvNeXt recipe of the KernelWarehouse paper (appendix A.1, as in ConvNeXt):
# AdamW (lr 4e-3, betas 0.9/0.999, weight decay 0.05 except on norms, biases and other 1-D
# tensors), 20 warmup epochs then cosine to 1e-6, total batch 4096 = 8 GPUs x 512, RandAugment
# (rand-m9-mstd0.5-inc1), mixup 0.8, cutmix 1.0, random erasing 0.25, label smoothing 0.1 and an
# EMA of the weights (decay 0.9999 per iteration), evaluated with the EMA weights.
# Everything not set here comes from mmpretrain's ConvNeXt-Tiny config.
_base_ = 'mmpretrain::convnext/convnext-tiny_32xb128_in1k.py'

custom_imports = dict(imports=['kw_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(drop_path_rate=0.1),
    head=dict(
        loss=dict(
            _delete_=True,
            type='LabelSmoothLoss',
            label_smooth_val=0.1,
            mode='original')),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]))

# data: 8 GPUs x 512 images
train_dataloader = dict(batch_size=512)

# schedule
optim_wrapper = dict(
    optimizer=dict(
        type='AdamW',
        lr=4e-3,
        weight_decay=0.05,
        eps=1e-8,
        betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=None)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=20,
        convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=20)
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)

# runtime: the EMA of the ConvNeXt release (timm ModelEma, decay 0.9999)
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]

# lr 4e-3 is for a total batch of 4096; `--auto-scale-lr` rescales it for other batch sizes.
auto_scale_lr = dict(base_batch_size=4096)
