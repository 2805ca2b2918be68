# DY-Conv (4x) ResNet18 on the paper's 300-epoch recipe (Table 2: 45.47M).
_base_ = './_base_/dynamic-resnet_8xb512-300e_in1k.py'

model = dict(backbone=dict(depth=18, method='dyconv', num_kernels=4))
