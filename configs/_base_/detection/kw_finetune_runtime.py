# mmdet's default runtime plus what every KernelWarehouse fine-tuning needs: kw_mm registered,
# and KWFinetuneHook keeping the attention temperature at 0 (no attention initialization while
# fine-tuning, paper appendix A.1.2) for training, validation and testing.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['kw_mm', 'mmpretrain.models'], allow_failed_imports=False)
custom_hooks = [dict(type='kw_mm.KWFinetuneHook')]
