# DY-Conv (4x) MobileNetV2 (0.5x) on the paper's 150-epoch recipe (Table 4: 4.57M).
_base_ = './dyconv4x-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(widen_factor=0.5))
