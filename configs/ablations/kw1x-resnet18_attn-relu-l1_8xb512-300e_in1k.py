# Paper Table 8, KW (1x) ResNet18 with max(z, 0) / sum|z| attentions (11.93M): the
# contrasting-driven attention function without its negative attentions.
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw1x-resnet18_8xb512-300e_in1k.py.
_base_ = '../kw1x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(attention_function='relu-l1'))
