# CondConv (8x) ResNet18 on the paper's 100-epoch recipe (Table 1: 81.35M): CondConv layers in
# the last three residual blocks (one sigmoid router per block) and a CondConv classifier with 8
# experts. A reconstruction from the printed count (docs/rivals.md): no CondConv ResNet code was
# published. CondConv has no temperature, so no temperature hook.
_base_ = './_base_/dynamic-resnet_8xb32-100e_in1k.py'

model = dict(
    backbone=dict(depth=18, method='condconv', num_kernels=8),
    head=dict(type='kw_mm.CondLinearClsHead', num_experts=8))

custom_hooks = []
