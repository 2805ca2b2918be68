# KW (4x) ResNet18 on the paper's 300-epoch recipe (Table 2: 45.86M; release:
# kw4x_resnet18, drop path 0.1).
_base_ = './_base_/kw-resnet_8xb512-300e_in1k.py'

model = dict(backbone=dict(depth=18, budget=4, drop_path_rate=0.1))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   13.8 GB at this config's 512 images per GPU; 4.0 GB at 128
#   (cuda plan, measured on cpu, tensors only).
