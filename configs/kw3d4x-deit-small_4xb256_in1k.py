# KW (3/4x) DeiT-Small, paper Table 11: 19.23M; this layout gives 18,615,616 (closest: 18.62M,
# docs/model_zoo.md, "KW DeiT"): the KW 1x DeiT-Small config with KW 1/2x (half-size cells, b = 1/2) in the
# MLP warehouses and KW 1x in the attention warehouse, as KW 3/4x ConvNeXt does.
_base_ = './kw1x-deit-small_4xb256_in1k.py'

model = dict(backbone=dict(budget=0.75))
