# KW (1x) ResNet-101 on the paper's 300-epoch recipe: mmpretrain's ResNet-101 wrapped by
# kw_mm.KWBackbone, its warehouses planned by the paper's rules as for its ResNet50
# (static_depth=2: the stem, layer1.0.conv1 and its shortcut stay static; one warehouse per
# stage, the first layers of every stage handed to the previous one). The third stage's 23
# blocks are split into four warehouses of at most 6 blocks (stage_blocks=6, the longest stage
# of ResNet50), as the paper splits ConvNeXt-Tiny's long stage: one warehouse for all 23 would
# make every mixture of the stage draw on several hundred cells (the assembly cost grows with
# n). The
# paper trains no ResNet-101: no published accuracy. Print the layout with
#   python tools/analysis/kw_layout.py configs/kw1x-resnet101_8xb512-300e_in1k.py
_base_ = './resnet101_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='kw_mm.KWBackbone',
        backbone=dict(type='mmpretrain.ResNet', depth=101, out_indices=(3, ),
                      drop_path_rate=0.1),
        budget=1,
        static_depth=2,
        stage_blocks=6))

# the attention temperature falls from 1 to 0 over the first 20 epochs (T = 20 of this recipe)
custom_hooks = [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=20)]

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   61.5 GB at this config's 512 images per GPU; 15.9 GB at 128
#   (cuda plan, measured on cpu, tensors only).
