# ResNet18 baseline of the KernelWarehouse paper on the 300-epoch recipe (Table 2: 11.69M;
# release: resnet18, no drop path).
_base_ = './_base_/resnet_8xb512-300e_in1k.py'

model = dict(backbone=dict(depth=18, drop_path_rate=0.0))
