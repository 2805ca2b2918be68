# Paper Table 7, KW (1x) ResNet50 sharing only between same-dimensioned kernels (26.95M): per
# stage, one warehouse per position in the Bottleneck (its k x k x c x f is the same in every
# block of the stage; the handed-over layers join position 0), the reference's
# sharing_range='layer'.
# The paper's 300-epoch recipe (ablations, Sec. 4.3) as kw1x-resnet50_8xb512-300e_in1k.py.
_base_ = '../kw1x-resnet50_8xb512-300e_in1k.py'

model = dict(backbone=dict(sharing_range='same-dim'))
