# The 100-epoch ResNet recipe of the KernelWarehouse paper (Table 1; appendix A.1, "traditional
# training strategy"): SGD (lr 0.1, momentum 0.9, weight decay 1e-4), lr divided by 10 at epochs
# 30, 60 and 90 of 100, total batch 256 = 8 GPUs x 32, random resized crop 224 + horizontal flip
# (test: resize 256, center crop 224). This is exactly mmpretrain's ResNet18 ImageNet config.
#
# Data: data/imagenet (mmpretrain's ImageNet layout). Another root with one option of
# tools/train.py and tools/test.py (it moves every dataloader and evaluator path):
#   --cfg-options data_root=$ROOT
_base_ = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'

custom_imports = dict(imports=['kw_mm'], allow_failed_imports=False)

# lr 0.1 is for a total batch of 256; `--auto-scale-lr` rescales it for other batch sizes.
auto_scale_lr = dict(base_batch_size=256)
