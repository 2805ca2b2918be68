# KW ConvNeXt-Tiny on the 300-epoch recipe: the plain recipe, a KWConvNeXt backbone with the
# drop-path rate of the released KW models (0.3), and the temperature annealed from 1 to 0 over
# the first 20 epochs (paper appendix A.1). The top-level configs choose budget and layout.
_base_ = './convnext-tiny_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWConvNeXt',
        arch='tiny',
        budget=1.0,
        layout='paper',
        out_indices=(3, ),
        gap_before_final_norm=True,
        drop_path_rate=0.3))

custom_hooks = [
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    dict(type='kw_mm.KWTemperatureHook', anneal_epochs=20),
]
