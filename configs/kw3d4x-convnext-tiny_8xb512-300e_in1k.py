# KW (3/4x) ConvNeXt-Tiny (paper Table 2 / Table 14): KW 1/2x on the point-wise warehouses of
# the last two warehouse groups, KW 1x elsewhere.
_base_ = './_base_/kw-convnext-tiny_8xb512-300e_in1k.py'

model = dict(backbone=dict(budget=0.75, layout='paper'))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   54.2 GB at this config's 512 images per GPU; 13.9 GB at 128
#   (cuda plan, measured on cpu, tensors only).
