# Paper Table 5, KW (1x) ResNet18 without kernel partition (11.78M): every cell is a whole kernel,
# mixed by one attention per kernel; whole kernels are shared only between kernels of one shape
# within a stage.
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw1x-resnet18_8xb512-300e_in1k.py.
_base_ = '../kw1x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(partition=False))
