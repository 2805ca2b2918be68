# KW (4x) MobileNetV2 (0.5x) (paper Table 4: 4.65M): the 1.0x design at half width.
# Release: kw4x_mobilenetv2_050.
_base_ = './kw4x-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(widen_factor=0.5))
