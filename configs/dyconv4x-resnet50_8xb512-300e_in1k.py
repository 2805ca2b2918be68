# DY-Conv (4x) ResNet50 on the paper's 300-epoch recipe (Table 2: 100.88M).
_base_ = './_base_/dynamic-resnet_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(depth=50, method='dyconv', num_kernels=4),
    head=dict(in_channels=2048))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   93.4 GB at this config's 512 images per GPU; 24.2 GB at 128
#   (cuda plan, measured on cpu, tensors only).
