# KW (1x) DeiT-Small, paper Table 11: 24.36M; this layout gives 24,364,192 (exact, docs/model_zoo.md
# "KW DeiT"). mmpretrain's DeiT-Small recipe is its DeiT-Tiny recipe with the Small arch and a
# 384-channel head, so this is the KW 1x DeiT-Tiny config with those two changes.
_base_ = './kw1x-deit-tiny_4xb256_in1k.py'

model = dict(backbone=dict(arch='deit-small'), head=dict(in_channels=384))
