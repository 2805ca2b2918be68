"""KernelWarehouse layers, independent of any OpenMMLab toolbox (torch only)."""
from .attention import AttentionBatchNorm1d, KWAttention
from .fast import apply_kw_impl, get_kw_impl, use_kw_impl
from .functional import (KWGeometry, assemble_kernels_reference, kw_attention_reference,
                         kw_conv_reference)
from .kw_conv import KWConv1d, KWConv2d, KWConv3d, KWConvNd, KWLinear
from .plan import KW_IMPLS, PATHS, LayerPlan, plan_layer, planning_as
from .temperature import check_temperature, get_temperature, set_temperature
from .warehouse import WarehouseManager, WarehouseSpec

__all__ = [
    'AttentionBatchNorm1d', 'KWAttention', 'KWGeometry', 'assemble_kernels_reference',
    'kw_attention_reference', 'kw_conv_reference', 'apply_kw_impl', 'get_kw_impl', 'use_kw_impl',
    'KWConv1d', 'KWConv2d', 'KWConv3d', 'KWConvNd', 'KWLinear',
    'check_temperature', 'get_temperature', 'set_temperature', 'WarehouseManager', 'WarehouseSpec',
    'KW_IMPLS', 'PATHS', 'LayerPlan', 'plan_layer', 'planning_as'
]
