# MobileNetV2 (1.0x) baseline of the KernelWarehouse paper (Table 4: 3.50M, 72.02 top-1) on the
# paper's 150-epoch recipe.
_base_ = './_base_/mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(type='MobileNetV2', widen_factor=1.0))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   2.4 GB at this config's 32 images per GPU
#   (cuda plan, measured on cpu, tensors only).
