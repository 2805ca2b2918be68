# KW (1x) DeiT-Small, paper Table 11: 24.36M; this layout gives 24,364,192 (exact,
# README "KW DeiT"). mmpretrain's DeiT recipe with a KWVisionTransformer backbone (value, output
# projection and MLP layers from warehouses, query and key static) and the temperature anneal.
_base_ = ['./deit-small_4xb256_in1k.py', './_base_/kw-deit_temperature.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWVisionTransformer',
        arch='deit-small',
        budget=1,
        img_size=224,
        patch_size=16))
