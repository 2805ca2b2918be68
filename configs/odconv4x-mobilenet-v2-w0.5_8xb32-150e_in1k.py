# ODConv (4x) MobileNetV2 (0.5x) on the paper's 150-epoch recipe (Table 4: 4.44M; release:
# od_mobilenetv2_050 4x).
_base_ = './odconv4x-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(widen_factor=0.5))
