# The paper's rival dynamic convolutions (DY-Conv, ODConv) in MobileNetV2 on the 150-epoch recipe
# (Table 4): the plain recipe with a DynamicMobileNetV2 backbone (every conv dynamic but the
# stem) and the softmax temperature annealed from 30 to 1 over the first 10 epochs (DY-Conv
# paper; the ODConv release). The top-level configs choose method and width.
_base_ = './mobilenet-v2_8xb32-150e_in1k.py'

model = dict(
    backbone=dict(_delete_=True, type='kw_mm.DynamicMobileNetV2', method='dyconv',
                  widen_factor=1.0, num_kernels=4, out_indices=(7, )))

custom_hooks = [dict(type='kw_mm.DynamicConvTemperatureHook', anneal_epochs=10)]
