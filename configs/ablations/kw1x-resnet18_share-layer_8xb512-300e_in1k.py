# Paper Table 6, KW (1x) ResNet18 with warehouses shared within each layer (11.81M): one
# warehouse per convolution, its cells shared by that layer's linear mixtures.
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw1x-resnet18_8xb512-300e_in1k.py.
_base_ = '../kw1x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(sharing_range='within-layer'))
