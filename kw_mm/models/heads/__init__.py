from .cond_linear_cls_head import CondLinearClsHead
from .kw_linear_cls_head import KWLinearClsHead

__all__ = ['KWLinearClsHead', 'CondLinearClsHead']
