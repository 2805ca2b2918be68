# KW* (4x) MobileNetV2 (1.0x) (paper appendix Table 17: 12.51M, 76.54 top-1): KW 4x whose
# attentions also compute ODConv's channel, filter and spatial attentions (kw_mm/cnn/kw_star.py;
# a reconstruction from the printed count, no code was published). Same recipe and temperature
# schedule as KW 4x (the heads start at 1 with t = 1 and are plain sigmoids at t = 0).
_base_ = './kw4x-mobilenet-v2_8xb32-150e_in1k.py'

model = dict(backbone=dict(omni_attention=True))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   4.1 GB at this config's 32 images per GPU
#   (cuda plan, measured on cpu, tensors only).
