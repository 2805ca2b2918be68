# The 150-epoch MobileNetV2 recipe of the KernelWarehouse paper (appendix A.1, "Training setup for
# MobileNetV2 models"): SGD (lr 0.1, momentum 0.9, weight decay 4e-5), cosine annealing to 0 over
# 150 epochs, total batch 256 = 8 GPUs x 32, random resized crop + horizontal flip only.
# Model and data (RandomResizedCrop 224 + RandomFlip; test: resize 256, center crop 224) come from
# mmpretrain's MobileNetV2 config; only the schedule differs.
_base_ = 'mmpretrain::mobilenet_v2/mobilenet-v2_8xb32_in1k.py'

custom_imports = dict(imports=['kw_mm'], allow_failed_imports=False)

# schedule
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=4e-5))
# A list replaces the base's per-epoch StepLR; the reference trainer updates the cosine every
# iteration.
param_scheduler = [
    dict(
        type='CosineAnnealingLR',
        T_max=150,
        eta_min=0.0,
        by_epoch=True,
        begin=0,
        end=150,
        convert_to_iter_based=True)
]
train_cfg = dict(by_epoch=True, max_epochs=150, val_interval=1)

# lr 0.1 is for a total batch of 256; `--auto-scale-lr` rescales it for other batch sizes.
auto_scale_lr = dict(base_batch_size=256)
