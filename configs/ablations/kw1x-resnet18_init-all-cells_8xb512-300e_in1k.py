# Paper Table 13, KW (1x) ResNet18, all the cells to every linear mixture (11.93M): beta = 1
# for every cell of the warehouse while the temperature anneals (the paper: all beta_ij = 1).
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw1x-resnet18_8xb512-300e_in1k.py.
_base_ = '../kw1x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(init_strategy='all-to-one'))
