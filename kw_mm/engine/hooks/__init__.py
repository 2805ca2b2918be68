from .kw_finetune_hook import KWFinetuneHook
from .kw_temperature_hook import KWTemperatureHook

__all__ = ['KWTemperatureHook', 'KWFinetuneHook']
