from .dynamic_mobilenet_v2 import DynamicMobileNetV2
from .dynamic_resnet import DynamicResNet
from .kw_backbone import KWBackbone
from .kw_convnext import KWConvNeXt
from .kw_mobilenet_v2 import KWMobileNetV2
from .kw_resnet import KWResNet
from .kw_vision_transformer import KWVisionTransformer

__all__ = [
    'KWResNet', 'KWMobileNetV2', 'KWConvNeXt', 'KWVisionTransformer', 'DynamicResNet',
    'DynamicMobileNetV2', 'KWBackbone'
]
