from .kw_finetune_hook import KWFinetuneHook
from .kw_temperature_hook import KWTemperatureHook
from .random_state_hook import RandomStateHook

__all__ = ['KWTemperatureHook', 'KWFinetuneHook', 'RandomStateHook']
