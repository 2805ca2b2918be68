# DY-Conv (4x) ResNet18 on the paper's 300-epoch recipe (Table 2: 45.47M).
_base_ = './_base_/dynamic-resnet_8xb512-300e_in1k.py'

model = dict(backbone=dict(depth=18, method='dyconv', num_kernels=4))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   41.1 GB at this config's 512 images per GPU; 10.7 GB at 128
#   (cuda plan, measured on cpu, tensors only).
