from .dynamic_conv_hooks import DynamicConvFinetuneHook, DynamicConvTemperatureHook
from .kw_finetune_hook import KWFinetuneHook
from .kw_temperature_hook import KWTemperatureHook

__all__ = [
    'KWTemperatureHook', 'KWFinetuneHook', 'DynamicConvTemperatureHook', 'DynamicConvFinetuneHook'
]
