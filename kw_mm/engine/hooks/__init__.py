from .base import BaseTemperatureHook, find_temperature_hooks, unwrap_model
from .dynamic_conv_hooks import DynamicConvFinetuneHook, DynamicConvTemperatureHook
from .kw_finetune_hook import KWFinetuneHook
from .kw_temperature_hook import KWTemperatureHook

__all__ = [
    'BaseTemperatureHook', 'KWTemperatureHook', 'KWFinetuneHook', 'DynamicConvTemperatureHook',
    'DynamicConvFinetuneHook', 'find_temperature_hooks', 'unwrap_model'
]
