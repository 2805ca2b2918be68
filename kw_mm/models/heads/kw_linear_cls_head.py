"""A linear classification head whose classifier is a KernelWarehouse linear layer.

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024, appendix A.3:
the KW 1/2x MobileNetV2 also applies KernelWarehouse to the classifier, with kernel cells of
1000x32 (``num_classes`` x 32), b = 1/2 and attention reduction 1/32.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.heads import ClsHead

from kw_mm.cnn import WarehouseManager
from kw_mm.registry import MODELS


def _cell_ratio(cell: int, channels: int) -> float:
    """The ratio for which ``WarehouseManager`` makes cells of exactly ``cell`` channels.

    The manager takes ``int(channels * ratio)``; ``cell / channels`` may round below ``cell``.
    """
    ratio = cell / channels
    while int(channels * ratio) < cell:
        ratio = math.nextafter(ratio, math.inf)
    return ratio


@MODELS.register_module()
class KWLinearClsHead(ClsHead):
    """Dropout + a KW linear classifier drawing from its own one-warehouse manager.

    The classifier ``[num_classes, in_channels]`` is cut into cells of
    ``[cell_out_channels, cell_in_channels]``; the warehouse holds ``n = int(M * budget)`` of
    them. With the defaults and 1000 classes over 1280 features this is the classifier of the
    released KW 1/2x MobileNetV2 (M = 40 mixtures, n = 20 cells of 1000x32). Its attention is a
    :class:`~kw_mm.cnn.KWAttention`, so :func:`kw_mm.set_temperature` and the
    ``KWTemperatureHook`` reach it like the backbone's.

    Args:
        num_classes (int): Number of categories.
        in_channels (int): Number of input features.
        dropout_ratio (float): Dropout before the classifier. The released models were
            trained with 0. Defaults to 0.
        budget (float): ``b`` of the classifier's warehouse. Defaults to 0.5.
        cell_in_channels (int): Input features of a cell; must divide ``in_channels``.
            Defaults to 32.
        cell_out_channels (int, optional): Output features of a cell; must divide
            ``num_classes``. None means ``num_classes``. Defaults to None.
        reduction (float): Attention hidden ratio. Defaults to 1/32.
        attention_norm (str): ``'BN'`` or ``'LN'``. Defaults to ``'BN'``.
        init_cfg (dict, optional): Leave None: the cells and the attention are initialized at
            construction, and a generic ``Linear`` rule would overwrite the attention's init.
            Defaults to None.
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of mmpretrain's ``ClsHead``.

    Example:
        >>> import torch
        >>> from kw_mm.models import KWLinearClsHead
        >>> head = KWLinearClsHead(num_classes=10, in_channels=64).eval()
        >>> tuple(head((torch.rand(2, 64), )).shape)
        (2, 10)
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 dropout_ratio: float = 0.0,
                 budget: float = 0.5,
                 cell_in_channels: int = 32,
                 cell_out_channels: Optional[int] = None,
                 reduction: float = 1 / 32,
                 attention_norm: str = 'BN',
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be a positive integer')
        if in_channels <= 0:
            raise ValueError(f'in_channels={in_channels} must be a positive integer')
        if not 0.0 <= dropout_ratio < 1.0:
            raise ValueError(f'dropout_ratio must be in [0, 1), got {dropout_ratio}')
        if cell_out_channels is None:
            cell_out_channels = num_classes
        for name, cell, channels, of in (('cell_in_channels', cell_in_channels, in_channels,
                                          'in_channels'),
                                         ('cell_out_channels', cell_out_channels, num_classes,
                                          'num_classes')):
            if not (isinstance(cell, int) and cell > 0 and channels % cell == 0):
                raise ValueError(f'{name} must be a positive divisor of {of} ({channels}), '
                                 f'got {cell!r}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.warehouse_manager = WarehouseManager(
            reduction=reduction,
            cell_num_ratio=budget,
            cell_inplane_ratio=_cell_ratio(cell_in_channels, in_channels),
            cell_outplane_ratio=_cell_ratio(cell_out_channels, num_classes),
            norm=attention_norm)
        self.dropout = nn.Dropout(dropout_ratio)
        self.fc = self.warehouse_manager.reserve(in_channels, num_classes, bias=True,
                                                 warehouse_name='classifier',
                                                 layer_type='linear')
        self.warehouse_manager.store()
        self.warehouse_manager.allocate(self)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """The feature of the last stage (as ``LinearClsHead``)."""
        return feats[-1]

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """Class scores ``[B, num_classes]``."""
        return self.fc(self.dropout(self.pre_logits(feats)))
