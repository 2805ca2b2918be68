# KW (4x) MobileNetV2 (1.0x) (paper Table 4: 11.38M): every conv a KW conv, per stage three
# warehouses (depth-wise, expansion and projection point-wise). Release: kw4x_mobilenetv2_100.
_base_ = './_base_/kw-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(widen_factor=1.0, budget=4))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   2.5 GB at this config's 32 images per GPU
#   (cuda plan, measured on cpu, tensors only).
