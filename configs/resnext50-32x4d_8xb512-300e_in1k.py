# ResNeXt-50 (32x4d) on the paper's 300-epoch ResNet recipe (the plain twin of
# kw1x-resnext50-32x4d_8xb512-300e_in1k.py): mmpretrain's ResNeXt, drop path 0.1.
_base_ = './_base_/resnet_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNeXt',
        depth=50,
        groups=32,
        width_per_group=4,
        out_indices=(3, ),
        drop_path_rate=0.1),
    head=dict(in_channels=2048))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   52.9 GB at this config's 512 images per GPU; 13.5 GB at 128
#   (cuda plan, measured on cpu, tensors only).
