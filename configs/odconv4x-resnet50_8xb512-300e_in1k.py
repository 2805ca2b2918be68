# ODConv (4x) ResNet50 on the paper's 300-epoch recipe (Table 2: 90.67M; release: od_resnet50 4x).
_base_ = './_base_/dynamic-resnet_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(depth=50, method='odconv', num_kernels=4),
    head=dict(in_channels=2048))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   143.2 GB at this config's 512 images per GPU; 36.6 GB at 128
#   (cuda plan, measured on cpu, tensors only).
