"""A linear classification head whose classifier is a CondConv linear layer (the CondConv 8x
ResNet18 of the KernelWarehouse paper's Table 1: 8 expert weights and biases, own router)."""
from typing import Optional

from mmpretrain.models.heads import LinearClsHead

from kw_mm.cnn.dynamic import CondLinear
from kw_mm.registry import MODELS


@MODELS.register_module()
class CondLinearClsHead(LinearClsHead):
    """mmpretrain's ``LinearClsHead`` with ``fc`` a :class:`~kw_mm.cnn.dynamic.CondLinear`.

    Args:
        num_classes (int): Number of categories.
        in_channels (int): Number of input features.
        num_experts (int): Experts of the classifier. Defaults to 8.
        init_cfg (dict, optional): Defaults to None (the experts are initialized like
            ``nn.Linear`` at construction).
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of mmpretrain's ``ClsHead``.

    Example:
        >>> import torch
        >>> head = CondLinearClsHead(num_classes=10, in_channels=64)
        >>> tuple(head((torch.rand(2, 64), )).shape)
        (2, 10)
    """

    def __init__(self, num_classes: int, in_channels: int, num_experts: int = 8,
                 init_cfg: Optional[dict] = None, **kwargs) -> None:
        super().__init__(num_classes, in_channels, init_cfg=init_cfg, **kwargs)
        self.fc = CondLinear(in_channels, num_classes, num_experts=num_experts)
