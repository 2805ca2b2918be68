# Paper Table 6, KW (1x) ResNet18 without warehouse sharing (11.78M): every linear mixture
# draws only on its own cell (one warehouse per convolution, no cell shared between mixtures).
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw1x-resnet18_8xb512-300e_in1k.py.
_base_ = '../kw1x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(sharing_range='none'))
