# KW (1/2x) MobileNetV2 (1.0x) (paper Table 4: 2.65M; appendix A.3): KW convs for the stem, the
# depth-wise convs and the last stage's point-wise convs, and a KW linear classifier (cells of
# 1000x32, b=1/2). Release: kw1d2x_mobilenetv2_100.
_base_ = './_base_/kw-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(
    backbone=dict(widen_factor=1.0, budget=0.5),
    head=dict(
        type='kw_mm.KWLinearClsHead',
        budget=0.5,
        cell_in_channels=32,
        reduction=1 / 32))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   2.4 GB at this config's 32 images per GPU
#   (cuda plan, measured on cpu, tensors only).
