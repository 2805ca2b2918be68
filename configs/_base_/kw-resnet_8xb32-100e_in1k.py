# KW ResNet on the paper's 100-epoch recipe (Table 1): the plain recipe with a KWResNet backbone
# and the attention temperature annealed from 1 to 0 over the first 10 epochs (T = 10, the
# paper's setting for this recipe, appendix A.1). No drop path (the traditional recipe has none).
# The top-level configs choose depth and budget.
_base_ = './resnet_8xb32-100e_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWResNet',
        depth=18,
        budget=1,
        out_indices=(3, ),
        drop_path_rate=0.0))

custom_hooks = [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=10)]
