# What a KW DeiT config adds to mmpretrain's DeiT recipe: kw_mm's modules and the attention
# temperature annealed from 1 to 0 over the first 20 of the 300 epochs (T = 20, the paper's
# setting for its 300-epoch recipe; the paper gives no other for DeiT). The top-level configs
# list this file after the DeiT config they extend and replace the backbone.
custom_imports = dict(imports=['kw_mm'], allow_failed_imports=False)
custom_hooks = [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=20)]
