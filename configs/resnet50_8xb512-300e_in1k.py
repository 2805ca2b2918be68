# ResNet50 baseline of the KernelWarehouse paper on the 300-epoch recipe (Table 2: 25.56M;
# release: resnet50, drop path 0.1). mmpretrain's ResNet spreads the rate linearly over the
# blocks (0 to 0.1), where the reference applies 0.1 in every block.
_base_ = './_base_/resnet_8xb512-300e_in1k.py'

model = dict(
    backbone=dict(depth=50, drop_path_rate=0.1), head=dict(in_channels=2048))

# Memory per GPU, training step (`tools/analysis/memory.py CONFIG --device cuda`):
#   40.4 GB at this config's 512 images per GPU; 10.4 GB at 128
#   (cuda plan, measured on cpu, tensors only).
