# KW (1x) MobileNetV2 (0.5x) (paper Table 4: 2.85M): the 1.0x design at half width.
# Release: kw1x_mobilenetv2_050.
_base_ = './kw1x-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(widen_factor=0.5))
