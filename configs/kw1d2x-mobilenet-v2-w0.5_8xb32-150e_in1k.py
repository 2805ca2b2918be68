# KW (1/2x) MobileNetV2 (0.5x) (paper Table 4: 1.47M): the 1.0x design at half width.
# Release: kw1d2x_mobilenetv2_050.
_base_ = './kw1d2x-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(widen_factor=0.5))
