# KW (1x) ConvNeXt-Tiny in the layout of the released checkpoint kw1x_convnext_tiny
# (12 warehouses, 39,370,674 parameters); converted release weights load into this model.
_base_ = './_base_/kw-convnext-tiny_8xb512-300e_in1k.py'

model = dict(backbone=dict(budget=1.0, layout='release'))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   54.8 GB at this config's 512 images per GPU; 14.1 GB at 128
#   (cuda plan, measured on cpu, tensors only).
