# MobileNetV2 (0.5x) baseline of the KernelWarehouse paper (Table 4: 1.97M, 64.30 top-1). The last
# conv keeps 1280 channels, so the head is unchanged.
_base_ = './mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(widen_factor=0.5))
