"""Mean KW attentions over a data set, one matrix per warehouse (the paper's Figure 3).

For every warehouse, the rows are the linear mixtures of all its layers (module order, which is
the order cells are handed out in) and the columns are its ``n`` cells; entry ``(j, k)`` is the
attention ``alpha_jk`` averaged over every sample seen. With the one-to-one initialization the
largest entry of each row tends to lie on the "diagonal" of assigned cells.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from kw_mm.cnn import KWConvNd


class WarehouseAttention:
    """The mean attention matrix of one warehouse and where its layers' rows are."""

    def __init__(self, name: str, num_cells: int) -> None:
        self.name = name
        self.num_cells = num_cells
        self.layers: List[Tuple[str, int, int]] = []  # (layer name, first row, end row)
        self.sums: List[torch.Tensor] = []
        self.counts: List[int] = []

    def add_layer(self, layer_name: str, num_mixtures: int) -> int:
        start = self.layers[-1][2] if self.layers else 0
        self.layers.append((layer_name, start, start + num_mixtures))
        self.sums.append(torch.zeros(num_mixtures, self.num_cells, dtype=torch.float64))
        self.counts.append(0)
        return len(self.layers) - 1

    def mean(self) -> np.ndarray:
        """``[m_t, n]``: the mean attention of every mixture over every cell."""
        if not any(self.counts):
            raise RuntimeError(f'no sample reached warehouse {self.name!r}')
        rows = [(s / max(c, 1)).numpy() for s, c in zip(self.sums, self.counts)]
        return np.concatenate(rows, axis=0)


class AttentionRecorder:
    """Average the attentions of every KW layer of ``model`` while it runs.

    Example:
        >>> with AttentionRecorder(model) as rec:
        ...     for batch in loader:
        ...         model(batch)
        >>> maps = rec.warehouses()  # {warehouse name: WarehouseAttention}
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._warehouses: Dict[str, WarehouseAttention] = OrderedDict()
        self._handles = []
        managers = {}
        for name, layer in model.named_modules():
            if isinstance(layer, KWConvNd) and layer.owner is not None:
                managers.setdefault(id(layer.owner), None)
        manager_names = {id(m): n for n, m in model.named_modules() if id(m) in managers}
        for name, layer in model.named_modules():
            if not isinstance(layer, KWConvNd) or layer.geometry is None:
                continue
            key = layer.warehouse_name
            if len(managers) > 1:  # several managers may reuse warehouse names
                key = f'{manager_names.get(id(layer.owner), "?")}:{key}'
            wh = self._warehouses.get(key)
            if wh is None:
                wh = self._warehouses[key] = WarehouseAttention(key, layer.attention.num_cells)
            index = wh.add_layer(name, layer.geometry.num_mixtures)
            self._handles.append(layer.attention.register_forward_hook(
                self._make_hook(wh, index)))
        if not self._warehouses:
            raise ValueError(f'{type(model).__name__} has no KernelWarehouse layer')

    @staticmethod
    def _make_hook(wh: WarehouseAttention, index: int):
        def hook(module, args, alpha):
            # alpha: [B, M, n] (the zero cell already dropped)
            wh.sums[index] += alpha.detach().double().sum(dim=0).cpu()
            wh.counts[index] += alpha.shape[0]
        return hook

    def warehouses(self) -> Dict[str, WarehouseAttention]:
        return self._warehouses

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> 'AttentionRecorder':
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def plot_warehouse(wh: WarehouseAttention, path: str, title: Optional[str] = None,
                   max_layer_labels: int = 24) -> str:
    """Draw one warehouse's mean attentions as a heat map (mixtures x cells) into ``path``.

    A diverging colour map centred on 0 (the CAF attentions can be negative); horizontal lines
    separate the layers sharing the warehouse.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    data = wh.mean()
    rows, cols = data.shape
    limit = float(np.abs(data).max()) or 1.0
    width = min(14.0, 3.0 + cols * 0.06)
    height = min(14.0, 2.5 + rows * 0.06)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(data, cmap='RdBu_r', vmin=-limit, vmax=limit, aspect='auto',
                      interpolation='nearest')
    for _, start, _ in wh.layers[1:]:
        ax.axhline(start - 0.5, color='k', linewidth=0.4)
    if len(wh.layers) <= max_layer_labels:
        ax.set_yticks([(s + e - 1) / 2 for _, s, e in wh.layers])
        ax.set_yticklabels([n.split('.', 1)[-1] if len(n) > 28 else n for n, _, _ in wh.layers],
                           fontsize=6)
    ax.set_xlabel(f'kernel cells (n = {cols})')
    ax.set_ylabel(f'linear mixtures (m = {rows})')
    ax.set_title(title or f'warehouse {wh.name}: mean attention', fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
