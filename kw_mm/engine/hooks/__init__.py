from .base import BaseTemperatureHook, find_temperature_hooks, unwrap_model
from .dynamic_conv_hooks import DynamicConvFinetuneHook, DynamicConvTemperatureHook
from .kw_finetune_hook import KWFinetuneHook
from .kw_temperature_hook import KWTemperatureHook
from .random_state_hook import RandomStateHook

__all__ = [
    'BaseTemperatureHook', 'KWTemperatureHook', 'KWFinetuneHook', 'DynamicConvTemperatureHook',
    'DynamicConvFinetuneHook', 'RandomStateHook', 'find_temperature_hooks', 'unwrap_model'
]
