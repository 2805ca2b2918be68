# ConvNeXt-Tiny baseline of the KernelWarehouse paper (Table 2: 28.59M, 82.07 top-1) on the
# paper's 300-epoch recipe (drop path 0.1, as the released convnext_tiny).
_base_ = './_base_/convnext-tiny_8xb512-300e_in1k.py'

model = dict(backbone=dict(type='ConvNeXt', arch='tiny', drop_path_rate=0.1))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   51.7 GB at this config's 512 images per GPU; 13.2 GB at 128
#   (cuda plan, measured on cpu, tensors only).
