"""The attention module of a KernelWarehouse layer.

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024.

For every sample the module maps the layer's input to ``M`` linear mixtures over the ``n`` cells of
the layer's warehouse (plus one always-zero cell per mixture), normalized with the
contrasting-driven attention function (CAF) and mixed with the one-hot initialization ``beta``
under the temperature ``t``.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import CAF_EPS
#: Smallest hidden width of the attention MLP.
MIN_HIDDEN = 16


class AttentionBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that also accepts a training batch of one sample.

    The reference attention uses ``nn.BatchNorm1d`` after a global pooling, so a batch of one
    sample in training mode has a single value per channel and crashes. We keep the reference's
    math for every batch of two or more samples. For a batch of one sample in training mode we
    normalize with the running statistics (as in evaluation) and leave them untouched: a single
    pooled vector carries no batch statistics, and updating the running averages with a
    variance that does not exist would corrupt them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


NORM_LAYERS = {'BN': AttentionBatchNorm1d, 'LN': nn.LayerNorm}


class KWAttention(nn.Module):
    """SE-style attention producing the KernelWarehouse mixture weights of one layer.

    Args:
        in_channels (int): Input channels of the layer (the pooled feature length).
        num_mixtures (int): ``M``, the number of kernel cells the layer's kernel is cut into.
        num_cells (int): ``n``, the number of cells in the layer's warehouse.
        reduction (float): Hidden width ratio; hidden = max(int(in_channels * reduction), 16).
            Defaults to 1/16.
        norm (str): ``'BN'`` (BatchNorm1d, fc1 without bias) or ``'LN'`` (LayerNorm, fc1 with
            bias, as in ConvNeXt). Defaults to ``'BN'``.
        cell_num_ratio (float): The warehouse budget ``b``; sets the local cell count of the
            non-local basis. Defaults to 1.
        nonlocal_basis_ratio (float): Below 1, the logits of the other layers' cells come from a
            small shared basis (ResNet50 KW 1/2x). Defaults to 1 (disabled).
        start_cell (int): First cell of this layer in its warehouse. Defaults to 0.

    Shapes:
        input: ``[B, in_channels, *spatial]``; output: ``[B, M, n]``.
    """

    def __init__(self,
                 in_channels: int,
                 num_mixtures: int,
                 num_cells: int,
                 reduction: float = 1 / 16,
                 norm: str = 'BN',
                 cell_num_ratio: float = 1.0,
                 nonlocal_basis_ratio: float = 1.0,
                 start_cell: int = 0) -> None:
        super().__init__()
        if norm not in NORM_LAYERS:
            raise ValueError(f'attention norm must be one of {sorted(NORM_LAYERS)}, got {norm!r}')
        hidden = max(int(in_channels * reduction), MIN_HIDDEN)
        self.in_channels = in_channels
        self.num_mixtures = num_mixtures
        self.num_cells = num_cells
        self.planes_per_mixture = num_cells + 1  # the extra plane is the zero cell
        self.start_cell = start_cell
        self.temperature = 0.0

        self.fc1 = nn.Linear(in_channels, hidden, bias=(norm != 'BN'))
        self.norm1 = NORM_LAYERS[norm](hidden)
        self.act1 = nn.ReLU(inplace=True)

        self.use_basis = nonlocal_basis_ratio < 1.0
        if self.use_basis:
            self.num_local_cells = int(cell_num_ratio * num_mixtures)
            self.num_nonlocal_cells = num_cells - self.num_local_cells
            self.num_basis = max(int(self.num_nonlocal_cells * nonlocal_basis_ratio), MIN_HIDDEN)
            self.fc2 = nn.Linear(hidden, (self.num_local_cells + self.num_basis + 1) * num_mixtures,
                                 bias=False)
            self.fc3 = nn.Linear(self.num_basis, self.num_nonlocal_cells, bias=False)
            self.basis_bias = nn.Parameter(torch.zeros(num_mixtures * self.planes_per_mixture))
        else:
            self.fc2 = nn.Linear(hidden, num_mixtures * self.planes_per_mixture, bias=True)
        # The one-hot attention initialization; runtime state, never saved in checkpoints.
        self.register_buffer('beta', torch.zeros(num_mixtures, self.planes_per_mixture),
                             persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming (fan_out) linear weights, zero biases, unit norm weights (as the reference)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.use_basis:
            nn.init.zeros_(self.basis_bias)

    def assign_cells(self, start_cell: int, cell_num_ratio: float) -> int:
        """Hand warehouse cells to this layer's mixtures one-to-one (the attention init).

        Args:
            start_cell (int): The next free cell of the warehouse.
            cell_num_ratio (float): The warehouse budget ``b``.

        Returns:
            int: The next free cell after this layer.
        """
        beta = torch.zeros_like(self.beta)
        cell = start_cell
        if cell_num_ratio >= 1.0:
            step = int(cell_num_ratio)
            for j in range(self.num_mixtures):
                beta[j, cell] = 1.0
                cell += step
        else:
            mixtures_per_cell = int(1.0 / cell_num_ratio)
            for j in range(self.num_mixtures):
                if j % mixtures_per_cell == (j // mixtures_per_cell) % mixtures_per_cell:
                    beta[j, cell] = 1.0
                    cell += 1
                else:
                    beta[j, -1] = 1.0  # this mixture starts as the zero cell
        self.beta.copy_(beta)
        return cell

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden vector ``[B, h]`` of the attention MLP (pool, fc1, norm, ReLU)."""
        pooled = x.flatten(2).mean(dim=-1) if x.dim() > 2 else x
        return self.act1(self.norm1(self.fc1(pooled)))

    def logits(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unnormalized mixture logits ``[B, M, n + 1]`` (zero cell last); ``hidden`` may be
        given if already computed (KW* reads other heads from it)."""
        z = self.fc2(self.hidden(x) if hidden is None else hidden)
        if self.use_basis:
            z = self._expand_basis(z)
        return z.view(x.shape[0], self.num_mixtures, self.planes_per_mixture)

    def _expand_basis(self, z: torch.Tensor) -> torch.Tensor:
        """Map the basis logits to the other layers' cells; returns ``[B, M * (n + 1)]``."""
        batch = z.shape[0]
        z = z.reshape(batch * self.num_mixtures, -1)
        local = z[:, :self.num_local_cells]
        nonlocal_ = self.fc3(z[:, self.num_local_cells:-1])
        zero = z[:, -1:]
        s = self.start_cell
        z = torch.cat([nonlocal_[:, :s], local, nonlocal_[:, s:], zero], dim=1)
        return z.reshape(batch, -1) + self.basis_bias

    def forward(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mixture weights ``alpha`` ``[B, M, n]`` (contiguous).

        Same math as :func:`~kw_mm.cnn.functional.kw_attention_reference` (CAF, then
        ``(1 - t) * a + t * beta``, zero-cell column dropped), fused into one pass that writes
        only the ``n`` kept columns: ``alpha = t * beta + z * ((1 - t) / (|z|_1 + eps))``.
        """
        z = self.logits(x, hidden)
        denom = torch.linalg.vector_norm(z, ord=1, dim=-1, keepdim=True) + CAF_EPS
        t = self.temperature
        if t == 0.0:
            # At t = 0 (fine-tuning, and pretraining after the anneal) beta never enters.
            return z[..., :-1] / denom
        return torch.addcdiv(self.beta[:, :-1] * t, z[..., :-1], denom, value=1.0 - t)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, mixtures={self.num_mixtures}, '
                f'cells={self.num_cells}, temperature={self.temperature}')
