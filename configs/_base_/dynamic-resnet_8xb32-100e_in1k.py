# The paper's rival dynamic convolutions (DY-Conv, ODConv, CondConv) in a ResNet on the 100-epoch
# recipe (Table 1): the plain recipe, exactly as the KW models of the table, with a DynamicResNet
# backbone. DY-Conv and ODConv anneal their softmax temperature from 30 to 1 over the first 10
# epochs (DY-Conv paper Sec. 4.1; the ODConv release: temp_init 30, temp_epoch 10, updated every
# iteration) and evaluate at 1; CondConv has no temperature (its configs drop the hook).
# The top-level configs choose depth and method.
_base_ = './resnet_8xb32-100e_in1k.py'

model = dict(
    backbone=dict(_delete_=True, type='kw_mm.DynamicResNet', depth=18, method='dyconv',
                  num_kernels=4, out_indices=(3, ), drop_path_rate=0.0))

custom_hooks = [dict(type='kw_mm.DynamicConvTemperatureHook', anneal_epochs=10)]
