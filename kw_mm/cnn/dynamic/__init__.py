"""The rival dynamic convolutions of the KernelWarehouse paper (torch only): DY-Conv, ODConv,
CondConv."""
from .base import (ATTENTION_FUNCTIONS, MixtureConv2d, TemperedAttention, get_softmax_temperature,
                   kernel_attention, per_sample_conv2d, set_softmax_temperature)
from .condconv import CondConv2d, CondConvRouter, CondLinear
from .dyconv import DyConv2d, DyConvAttention
from .odconv import ODConv2d, ODConvAttention

__all__ = [
    'ATTENTION_FUNCTIONS', 'MixtureConv2d', 'TemperedAttention', 'get_softmax_temperature',
    'kernel_attention', 'per_sample_conv2d', 'set_softmax_temperature', 'CondConv2d',
    'CondConvRouter', 'CondLinear', 'DyConv2d', 'DyConvAttention', 'ODConv2d', 'ODConvAttention'
]
