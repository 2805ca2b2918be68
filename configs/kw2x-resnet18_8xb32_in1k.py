# KW (2x) ResNet18 on the paper's 100-epoch recipe (Table 1: 23.24M).
_base_ = './_base_/kw-resnet_8xb32-100e_in1k.py'

model = dict(backbone=dict(depth=18, budget=2))
