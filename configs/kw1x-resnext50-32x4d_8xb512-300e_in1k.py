# KW (1x) ResNeXt-50 (32x4d) on the paper's 300-epoch recipe: mmpretrain's ResNeXt wrapped by
# kw_mm.KWBackbone, planned by the paper's rules as its ResNet50 (static_depth=2); the grouped
# 3x3 convolutions get a warehouse of their own in every stage (cells of 4 input channels would
# otherwise cut every 1x1 kernel of the stage into hundreds of mixtures). The paper trains no
# ResNeXt: no published accuracy. Print the layout with
#   python tools/analysis/kw_layout.py configs/kw1x-resnext50-32x4d_8xb512-300e_in1k.py
_base_ = './resnext50-32x4d_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWBackbone',
        backbone=dict(type='mmpretrain.ResNeXt', depth=50, groups=32, width_per_group=4,
                      out_indices=(3, ), drop_path_rate=0.1),
        budget=1,
        static_depth=2))

# the attention temperature falls from 1 to 0 over the first 20 epochs (T = 20 of this recipe)
custom_hooks = [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=20)]

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   52.4 GB at this config's 512 images per GPU; 13.5 GB at 128
#   (cuda plan, measured on cpu, tensors only).
