"""A tiny data set and metric for real mmengine Runner runs in the hook tests."""
import torch
from mmengine.evaluator import BaseMetric
from torch.utils.data import Dataset


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
