# ResNet-101 on the paper's 300-epoch ResNet recipe (the plain twin of
# kw1x-resnet101_8xb512-300e_in1k.py): mmpretrain's ResNet, drop path 0.1 as the paper's ResNet50.
_base_ = './_base_/resnet_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(depth=101, drop_path_rate=0.1), head=dict(in_channels=2048))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   60.1 GB at this config's 512 images per GPU; 15.4 GB at 128
#   (cuda plan, measured on cpu, tensors only).
