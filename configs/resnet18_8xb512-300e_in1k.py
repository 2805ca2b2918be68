# ResNet18 baseline of the KernelWarehouse paper on the 300-epoch recipe (Table 2: 11.69M;
# release: resnet18, no drop path).
_base_ = './_base_/resnet_8xb512-300e_in1k.py'

model = dict(backbone=dict(depth=18, drop_path_rate=0.0))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   10.3 GB at this config's 512 images per GPU; 2.7 GB at 128
#   (cuda plan, measured on cpu, tensors only).
