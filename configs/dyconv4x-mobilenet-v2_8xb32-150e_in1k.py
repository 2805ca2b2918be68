# DY-Conv (4x) MobileNetV2 (1.0x) on the paper's 150-epoch recipe (Table 4: 12.40M).
_base_ = './_base_/dynamic-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(method='dyconv', widen_factor=1.0, num_kernels=4))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   2.8 GB at this config's 32 images per GPU
#   (cuda plan, measured on cpu, tensors only).
