# The 1x schedule of the paper (appendix A.1.2) and the KernelWarehouse release: 12 epochs,
# lr x0.1 after epochs 8 and 11, AdamW lr 1e-4, weight decay 0.05 except on norm layers, for a
# total batch of 16 (8 GPUs x 2 images). mmdet's 500-iteration linear warm-up is kept.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    # Every norm layer (BatchNorm, LayerNorm, GroupNorm; the KW attention norms too).
    paramwise_cfg=dict(norm_decay_mult=0.))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
