# Table 10: DY-Conv (4x) ResNet18 with KernelWarehouse's attention function (CAF, z / sum|z|)
# instead of its softmax, 300-epoch recipe (45.47M; paper: 73.74 vs 73.82 top-1 with softmax).
# CAF is scale invariant, so the temperature schedule has no effect on the kernel attention.
_base_ = '../dyconv4x-resnet18_8xb512-300e_in1k.py'

model = dict(backbone=dict(attention_function='caf'))
