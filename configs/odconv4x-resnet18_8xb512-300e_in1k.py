# ODConv (4x) ResNet18 on the paper's 300-epoch recipe (Table 2: 44.90M).
_base_ = './_base_/dynamic-resnet_8xb512-300e_in1k.py'

model = dict(backbone=dict(depth=18, method='odconv', num_kernels=4))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   67.8 GB at this config's 512 images per GPU; 17.3 GB at 128
#   (cuda plan, measured on cpu, tensors only).
