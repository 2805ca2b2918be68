# DeiT-Tiny, the baseline of the paper's Table 11 (5.72M; mmpretrain's VisionTransformer, 5,717,416
# parameters with the 1000-class head). mmpretrain's DeiT recipe as it is: 300 epochs, AdamW (lr
# 1e-3 for a total batch of 1024 = 4 GPUs x 256, weight decay 0.05, none on norms, biases, the
# class token and the position embedding), 20 linear warm-up epochs then cosine, gradient clipping
# at 5, DeiT augmentation (RandAugment, Mixup 0.8 / CutMix 1.0, random erasing 0.25, label
# smoothing 0.1). Data: data/imagenet, or `--cfg-options data_root=$ROOT`.
_base_ = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'
