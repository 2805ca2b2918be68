# Paper Tables 9 and 13, KW (1x) ResNet18 without attention initialization (11.93M): no beta and
# no temperature (the attentions are CAF of the logits from the first iteration on).
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw1x-resnet18_8xb512-300e_in1k.py.
_base_ = '../kw1x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(init_strategy='none'))
custom_hooks = []  # nothing to anneal
