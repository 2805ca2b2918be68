# KW (1/2x) ResNet18 on the paper's 100-epoch recipe (Table 1: 7.43M).
_base_ = './_base_/kw-resnet_8xb32-100e_in1k.py'

model = dict(backbone=dict(depth=18, budget=0.5))
