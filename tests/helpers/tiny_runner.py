"""A tiny KW model, data set and metric for real mmengine Runner runs in the hook tests."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from kw_mm.cnn import WarehouseManager, get_temperature


class TinySet(Dataset):
    """``num_samples`` deterministic 3x8x8 inputs with labels 0/1."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples

    def __len__(self):
        return self.num_samples

    def __getitem__(self, idx):
        g = torch.Generator().manual_seed(idx)
        return dict(inputs=torch.randn(3, 8, 8, generator=g), data_samples=idx % 2)


class CountMetric(BaseMetric):
    """Counts the predictions (the metric exists to make the Runner validate and test)."""
    default_prefix = 'tiny'

    def process(self, data_batch, data_samples):
        self.results.extend(int(p) for p in data_samples)

    def compute_metrics(self, results):
        return dict(count=float(len(results)))


class TinyKWNet(BaseModel):
    """Two KW convolutions sharing one warehouse and a classifier. Every call is recorded in
    ``calls`` as ``(mode, temperature, output finite)``."""

    def __init__(self) -> None:
        super().__init__()
        self.warehouse_manager = WarehouseManager()
        self.conv1 = self.warehouse_manager.reserve(3, 8, 3, padding=1, bias=False,
                                                    warehouse_name='stage0')
        self.conv2 = self.warehouse_manager.reserve(8, 8, 3, padding=1, bias=False,
                                                    warehouse_name='stage0')
        self.warehouse_manager.store()
        self.warehouse_manager.allocate(self)
        self.fc = nn.Linear(8, 2)
        self.calls = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        logits = self.fc(self.conv2(F.relu(self.conv1(x))).mean(dim=(2, 3)))
        self.calls.append((mode, get_temperature(self), bool(torch.isfinite(logits).all())))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, torch.as_tensor(data_samples)))
        if mode == 'predict':
            return list(logits.argmax(dim=1))
        return logits


class TinyDynamicNet(BaseModel):
    """A DY-Conv and an ODConv convolution and a classifier; ``calls`` as :class:`TinyKWNet`
    with the softmax temperature."""

    def __init__(self) -> None:
        super().__init__()
        from kw_mm.cnn.dynamic import DyConv2d, ODConv2d
        self.conv1 = DyConv2d(3, 8, 3, padding=1)
        self.conv2 = ODConv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)
        self.calls = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        from kw_mm.cnn.dynamic import get_softmax_temperature
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        logits = self.fc(self.conv2(F.relu(self.conv1(x))).mean(dim=(2, 3)))
        self.calls.append((mode, get_softmax_temperature(self),
                           bool(torch.isfinite(logits).all())))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, torch.as_tensor(data_samples)))
        if mode == 'predict':
            return list(logits.argmax(dim=1))
        return logits
