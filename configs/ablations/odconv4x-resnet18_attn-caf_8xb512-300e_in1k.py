# Table 10: ODConv (4x) ResNet18 with KernelWarehouse's attention function (CAF) as its kernel
# attention (the sigmoid channel, filter and spatial attentions unchanged), 300-epoch recipe
# (44.90M; paper: 74.27 vs 74.45 top-1 with softmax).
_base_ = '../odconv4x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(attention_function='caf'))
