# ResNet18 baseline of the KernelWarehouse paper on the 100-epoch recipe (Table 1: 11.69M).
_base_ = './_base_/resnet_8xb32-100e_in1k.py'
