# KW (1x) ResNet18 on the paper's 300-epoch recipe (Table 2: 11.93M; release:
# kw1x_resnet18, drop path 0.1).
_base_ = './_base_/kw-resnet_8xb512-300e_in1k.py'

model = dict(backbone=dict(depth=18, budget=1, drop_path_rate=0.1))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   13.1 GB at this config's 512 images per GPU; 3.4 GB at 128
#   (cuda plan, measured on cpu, tensors only).
