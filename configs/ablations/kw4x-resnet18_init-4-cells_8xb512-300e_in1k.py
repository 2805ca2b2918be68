# Paper Table 13, KW (4x) ResNet18, four cells to every linear mixture (45.86M): mixture j
# of a layer starts from the 4 cells start + 4j .. start + 4j + 3, no cell repeated.
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw4x-resnet18_8xb512-300e_in1k.py.
_base_ = '../kw4x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(init_strategy='many-to-one'))
