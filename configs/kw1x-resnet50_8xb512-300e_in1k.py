# KW (1x) ResNet50 on the paper's 300-epoch recipe (Table 2: 28.05M; release:
# kw1x_resnet50, drop path 0.1).
_base_ = './_base_/kw-resnet_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(depth=50, budget=1, drop_path_rate=0.1),
    head=dict(in_channels=2048))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   40.0 GB at this config's 512 images per GPU; 10.5 GB at 128
#   (cuda plan, measured on cpu, tensors only).
