from .base import BaseTemperatureHook, find_temperature_hooks, unwrap_model
from .kw_finetune_hook import KWFinetuneHook
from .kw_temperature_hook import KWTemperatureHook

__all__ = [
    'BaseTemperatureHook', 'KWTemperatureHook', 'KWFinetuneHook', 'find_temperature_hooks',
    'unwrap_model'
]
