# DY-Conv (4x) ResNet18 on the paper's 100-epoch recipe (Table 1: 45.47M; every conv but the
# stem dynamic, downsample convs included; attention reduction 1/4).
_base_ = './_base_/dynamic-resnet_8xb32-100e_in1k.py'

model = dict(backbone=dict(depth=18, method='dyconv', num_kernels=4))
