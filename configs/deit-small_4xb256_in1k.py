# DeiT-Small, the baseline of the paper's Table 11: mmpretrain's VisionTransformer has 22,050,664
# parameters with the 1000-class head, 22.05M (as mmpretrain's model zoo lists it); the paper
# prints 22.06M (see docs/model_zoo.md, "KW DeiT"). mmpretrain's DeiT recipe as it is (see
# deit-tiny_4xb256_in1k.py). Data: data/imagenet, or `--cfg-options data_root=$ROOT`.
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'
