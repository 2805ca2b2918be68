# Paper Table 13, KW (1/2x) ResNet18, one cell to two linear mixtures (7.43M): mixtures
# 2i and 2i + 1 of a layer both start from cell start + i instead of one of them from the zero cell.
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw1d2x-resnet18_8xb512-300e_in1k.py.
_base_ = '../kw1d2x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(init_strategy='one-to-many'))
