# ODConv (4x) ResNet18 on the paper's 100-epoch recipe (Table 1: 44.90M; the ODConv release's
# od_resnet18 4x: every conv inside a residual block, r = 1/16).
_base_ = './_base_/dynamic-resnet_8xb32-100e_in1k.py'

model = dict(backbone=dict(depth=18, method='odconv', num_kernels=4))
