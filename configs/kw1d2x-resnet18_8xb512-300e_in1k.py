# KW (1/2x) ResNet18 on the paper's 300-epoch recipe (Table 2: 7.43M; release:
# kw1d2x_resnet18, drop path 0.0).
_base_ = './_base_/kw-resnet_8xb512-300e_in1k.py'

model = dict(backbone=dict(depth=18, budget=0.5, drop_path_rate=0.0))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   13.8 GB at this config's 512 images per GPU; 3.6 GB at 128
#   (cuda plan, measured on cpu, tensors only).
