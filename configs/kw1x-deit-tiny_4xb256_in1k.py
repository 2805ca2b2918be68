# KW (1x) DeiT-Tiny, paper Table 11: 6.39M; this layout gives 6,387,424 (exact,
# docs/model_zoo.md, "KW DeiT"). mmpretrain's DeiT recipe with a KWVisionTransformer backbone (value, output
# projection and MLP layers from warehouses, query and key static) and the temperature anneal.
_base_ = ['./deit-tiny_4xb256_in1k.py', './_base_/kw-deit_temperature.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWVisionTransformer',
        arch='deit-tiny',
        budget=1,
        img_size=224,
        patch_size=16))
