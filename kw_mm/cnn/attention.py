"""The attention module of a KernelWarehouse layer.

Li, Yao, "KernelWarehouse: Rethinking the Design of Dynamic Convolution", ICML 2024.

For every sample the module maps the layer's input to ``M`` linear mixtures over the ``n`` cells of
the layer's warehouse (plus one always-zero cell per mixture), normalized with the
contrasting-driven attention function (CAF) and mixed with the one-hot initialization ``beta``
under the temperature ``t``.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention_fold import FoldedLinear, can_fold
from .functional import ATTENTION_FUNCTIONS, CAF_EPS, normalize_logits
from .precision import attention_precision, pool_to

#: Smallest hidden width of the attention MLP.
MIN_HIDDEN = 16
#: Attention initializations (``beta``) of the paper's Tables 9 and 13; ``'one-to-one'`` is the
#: paper's strategy.
INIT_STRATEGIES = ('one-to-one', 'all-to-one', 'many-to-one', 'one-to-many', 'none')
#: Which cells a mixture draws on: every cell of the warehouse (``'shared'``, the paper), only
#: its own ``b`` cells (``'private'``: no sharing, Table 6) or whole kernels made of ``M``
#: consecutive cells (``'whole-kernel'``: no kernel partition, Table 5).
CELL_ACCESS = ('shared', 'private', 'whole-kernel')


def check_attention_options(attention_function: str, init_strategy: str,
                            cell_access: str = 'shared') -> None:
    """Raise a one-line ValueError for an unknown attention function, strategy or access."""
    for what, value, allowed in (('attention_function', attention_function, ATTENTION_FUNCTIONS),
                                 ('init_strategy', init_strategy, INIT_STRATEGIES),
                                 ('cell_access', cell_access, CELL_ACCESS)):
        if value not in allowed:
            raise ValueError(f'{what} must be one of {list(allowed)}, got {value!r}')


def init_beta(rows: int, cells: int, start: int, budget: float,
              strategy: str) -> Tuple[torch.Tensor, int]:
    """The binary attention initialization ``beta`` of ``rows`` mixtures over ``cells`` cells.

    Cells are handed out from ``start`` in order, without repetition (paper Sec. 3.4 and
    appendix A.2). Every strategy but ``'one-to-many'`` advances through the warehouse as
    ``'one-to-one'`` does, so each layer keeps the same slice of cells (their initialization).

    Args:
        rows (int): Mixtures.
        cells (int): Cells of the warehouse (``beta`` has one more column: the zero cell).
        start (int): The layer's first cell.
        budget (float): The warehouse budget ``b``.
        strategy (str): One of :data:`INIT_STRATEGIES`:

            - ``'one-to-one'``: mixture ``j`` gets cell ``start + j * int(b)`` (b >= 1); below
              b = 1, with ``k = int(1 / b)``, the next free cell iff ``j % k == (j // k) % k``,
              else the zero cell;
            - ``'all-to-one'``: every mixture gets all ``n`` cells;
            - ``'many-to-one'``: mixture ``j`` gets the ``int(b)`` cells from
              ``start + j * int(b)`` (needs b >= 2);
            - ``'one-to-many'``: cell ``start + j // k`` goes to mixture ``j``, one cell to
              ``k = int(1 / b)`` mixtures (needs b < 1);
            - ``'none'``: no initialization (all zeros; the temperature is not used).

    Returns:
        tuple[Tensor, int]: ``beta`` ``[rows, cells + 1]`` and the next free cell.
    """
    beta = torch.zeros(rows, cells + 1)
    if budget >= 1.0:
        step = int(budget)
        if strategy == 'one-to-many':
            raise ValueError(f"init_strategy 'one-to-many' hands one cell to int(1 / b) "
                             f'mixtures and needs a budget b < 1, got b={budget:g}')
        if strategy == 'many-to-one' and step < 2:
            raise ValueError(f"init_strategy 'many-to-one' gives every mixture int(b) cells "
                             f'and needs a budget b >= 2, got b={budget:g}')
        end = start + rows * step
        # mixture j: its cell(s) from start + j * step
        taken = [(start + j * step, step if strategy == 'many-to-one' else 1)
                 for j in range(rows)]
    else:
        k = int(1.0 / budget)
        if strategy == 'many-to-one':
            raise ValueError(f"init_strategy 'many-to-one' gives every mixture int(b) cells "
                             f'and needs a budget b >= 2, got b={budget:g}')
        if strategy == 'one-to-many':
            end = start + math.ceil(rows / k)
            taken = [(start + j // k, 1) for j in range(rows)]
        else:
            served = [j % k == (j // k) % k for j in range(rows)]
            end = start + sum(served)
            # served mixtures take the next free cell; the others start as the zero cell
            taken, cell = [], start
            for is_served in served:
                taken.append((cell if is_served else cells, 1))
                cell += is_served
    if end > cells:
        return beta, end  # the caller reports the overrun
    if strategy == 'all-to-one':
        beta[:, :-1] = 1.0
    elif strategy != 'none':
        for j, (cell, width) in enumerate(taken):
            beta[j, cell:cell + width] = 1.0
    return beta, end


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
        attention_function (str): How the logits are normalized, one of
            :data:`~kw_mm.cnn.functional.ATTENTION_FUNCTIONS` (paper Table 8). Defaults to
            ``'caf'``, the paper's design.
        init_strategy (str): The attention initialization ``beta``, one of
            :data:`INIT_STRATEGIES` (paper Tables 9 and 13; see :func:`init_beta`). Defaults
            to ``'one-to-one'``, the paper's strategy.
        cell_access (str): Which cells a mixture draws on, one of :data:`CELL_ACCESS`.
            ``'private'``: mixture ``j`` only mixes its own ``int(b)`` cells (no sharing,
            Table 6); ``'whole-kernel'``: the layer mixes whole kernels, ``M`` consecutive
            cells each, with one attention per kernel (no kernel partition, Table 5). Defaults
            to ``'shared'`` (every cell of the warehouse).

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
                 start_cell: int = 0,
                 attention_function: str = 'caf',
                 init_strategy: str = 'one-to-one',
                 cell_access: str = 'shared') -> None:
        super().__init__()
        if norm not in NORM_LAYERS:
            raise ValueError(f'attention norm must be one of {sorted(NORM_LAYERS)}, got {norm!r}')
        check_attention_options(attention_function, init_strategy, cell_access)
        hidden = max(int(in_channels * reduction), MIN_HIDDEN)
        self.in_channels = in_channels
        self.num_mixtures = num_mixtures
        self.num_cells = num_cells
        self.start_cell = start_cell
        self.temperature = 0.0
        self.attention_function = attention_function
        self.init_strategy = init_strategy
        self.cell_access = cell_access
        # The attention computes rows x (cols + 1) logits; a non-shared access maps them to the
        # [M, n] mixture weights (expand()).
        self.rows, self.cols = self._compact_shape(cell_num_ratio)
        self.planes_per_mixture = self.cols + 1  # the extra plane is the zero cell

        self.fc1 = nn.Linear(in_channels, hidden, bias=(norm != 'BN'))
        self.norm1 = NORM_LAYERS[norm](hidden)
        self.act1 = nn.ReLU(inplace=True)

        self.use_basis = nonlocal_basis_ratio < 1.0
        if self.use_basis and cell_access != 'shared':
            raise ValueError(f"the non-local basis needs cell_access='shared', got "
                             f'{cell_access!r}')
        if self.use_basis:
            self.num_local_cells = int(cell_num_ratio * num_mixtures)
            self.num_nonlocal_cells = num_cells - self.num_local_cells
            self.num_basis = max(int(self.num_nonlocal_cells * nonlocal_basis_ratio), MIN_HIDDEN)
            self.fc2 = nn.Linear(hidden, (self.num_local_cells + self.num_basis + 1) * num_mixtures,
                                 bias=False)
            self.fc3 = nn.Linear(self.num_basis, self.num_nonlocal_cells, bias=False)
            self.basis_bias = nn.Parameter(torch.zeros(num_mixtures * self.planes_per_mixture))
        else:
            self.fc2 = nn.Linear(hidden, self.rows * self.planes_per_mixture, bias=True)
        # The one-hot attention initialization; runtime state, never saved in checkpoints.
        self.register_buffer('beta', torch.zeros(self.rows, self.planes_per_mixture),
                             persistent=False)
        # Where each of the [M, n] mixture weights comes from in the flattened [rows, cols]
        # attentions (index rows * cols: always zero); only for a non-shared access.
        self.register_buffer('expand_index', torch.zeros(0, dtype=torch.long), persistent=False)
        # fc1 with the evaluation BatchNorm folded in (runtime state, see attention_fold)
        self._folded = FoldedLinear()
        self.reset_parameters()

    def _compact_shape(self, budget: float) -> Tuple[int, int]:
        """``(rows, cols)`` of the attentions the module computes for its cell access."""
        if self.cell_access == 'shared':
            return self.num_mixtures, self.num_cells
        if budget < 1 or budget != int(budget):
            raise ValueError(f'cell_access={self.cell_access!r} needs a whole budget b >= 1, '
                             f'got b={budget:g}')
        if self.cell_access == 'private':
            return self.num_mixtures, int(budget)
        if self.num_cells % self.num_mixtures:
            raise ValueError(f"cell_access='whole-kernel': the warehouse's {self.num_cells} "
                             f'cells are no whole number of kernels of {self.num_mixtures} '
                             'cells; put only layers of one kernel shape in the warehouse')
        return 1, self.num_cells // self.num_mixtures

    @property
    def mix_temperature(self) -> float:
        """The temperature the forward uses: 0 without an initialization strategy."""
        return 0.0 if self.init_strategy == 'none' else self.temperature

    @property
    def splits_under_autocast(self) -> bool:
        """Whether the layer's product takes the attentions in two half-precision parts under
        autocast: while the initialization term enters (t > 0), see
        :func:`~kw_mm.cnn.precision.split_attentions`."""
        return self.mix_temperature > 0.0

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
        """Hand warehouse cells to this layer's mixtures (the attention initialization).

        Args:
            start_cell (int): The next free cell of the warehouse.
            cell_num_ratio (float): The warehouse budget ``b``.

        Returns:
            int: The next free cell after this layer.
        """
        if self.cell_access == 'shared':
            beta, end = init_beta(self.rows, self.cols, start_cell, cell_num_ratio,
                                  self.init_strategy)
        elif self.cell_access == 'private':
            # every mixture is its own warehouse of int(b) cells
            beta, _ = init_beta(1, self.cols, 0, cell_num_ratio, self.init_strategy)
            beta = beta.expand(self.rows, -1)
            end = start_cell + self.rows * self.cols
        else:
            # one mixture over the warehouse's whole kernels
            beta, _ = init_beta(1, self.cols, start_cell // self.num_mixtures, cell_num_ratio,
                                self.init_strategy)
            end = start_cell + self.num_mixtures * int(cell_num_ratio)
        self.beta.copy_(beta)
        if self.cell_access != 'shared':
            self.expand_index = self._expand_index(start_cell)
        return end

    def _expand_index(self, start_cell: int) -> torch.Tensor:
        """Index of every ``[M, n]`` weight in the flattened compact attentions."""
        m, n, cols = self.num_mixtures, self.num_cells, self.cols
        index = torch.full((m, n), self.rows * cols, dtype=torch.long)
        for j in range(m):
            if self.cell_access == 'private':  # mixture j: its own cells, from the layer's start
                first = start_cell + j * cols
                index[j, first:first + cols] = torch.arange(j * cols, (j + 1) * cols)
            else:  # kernel k is the cells k * M .. k * M + M - 1; mixture j takes cell j of each
                index[j, j::m] = torch.arange(cols)
        return index.view(-1)

    def expand(self, alpha: torch.Tensor) -> torch.Tensor:
        """Mixture weights ``[B, M, n]`` from the module's attentions ``[B, rows, cols]``."""
        if self.cell_access == 'shared':
            return alpha
        flat = alpha.reshape(alpha.shape[0], -1)
        flat = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], dim=1)
        return flat[:, self.expand_index].view(-1, self.num_mixtures, self.num_cells)

    @attention_precision
    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden vector ``[B, h]`` of the attention MLP (pool, fc1, norm, ReLU), in the
        parameters' dtype (float32 under autocast: :mod:`~kw_mm.cnn.precision`)."""
        dtype = self.fc1.weight.dtype
        pooled = pool_to(x.flatten(2), (-1, ), dtype) if x.dim() > 2 else x.to(dtype)
        return self.act1(self.norm1(self.fc1(pooled)))

    def _folds_mlp(self) -> bool:
        """Whether the forward runs the folded MLP: an evaluating BatchNorm, no autograd
        recording, and no hooks on the MLP's modules (they would not run)."""
        if torch.is_grad_enabled() or not can_fold(self.norm1):
            return False
        return not any(m._forward_hooks or m._forward_pre_hooks
                       for m in (self.fc1, self.norm1, self.act1, self.fc2))

    def _folded_logits(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`logits` with the BatchNorm folded into fc1 (:mod:`~kw_mm.cnn.attention_fold`)."""
        weight_t, bias = self._folded.get(self.fc1, self.norm1)
        dtype = weight_t.dtype
        pooled = pool_to(x.flatten(2), (-1, ), dtype) if x.dim() > 2 else x.to(dtype)
        z = F.linear(torch.addmm(bias, pooled, weight_t).relu_(), self.fc2.weight, self.fc2.bias)
        if self.use_basis:
            z = self._expand_basis(z)
        return z.view(x.shape[0], self.rows, self.planes_per_mixture)

    def train(self, mode: bool = True) -> 'KWAttention':
        # A switch drops the folded fc1: mmengine's loops switch after their hooks have
        # swapped weights through .data, which no version counter sees.
        if mode != self.training:
            self._folded.clear()
        return super().train(mode)

    @attention_precision
    def logits(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unnormalized mixture logits ``[B, M, n + 1]`` (zero cell last); ``hidden`` may be
        given if already computed (KW* reads other heads from it)."""
        z = self.fc2(self.hidden(x) if hidden is None else hidden)
        if self.use_basis:
            z = self._expand_basis(z)
        return z.view(x.shape[0], self.rows, self.planes_per_mixture)

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

    @attention_precision
    def forward(self, x: torch.Tensor, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mixture weights ``alpha`` ``[B, M, n]`` (contiguous), in the parameters' dtype
        (float32 under autocast: :mod:`~kw_mm.cnn.precision`).

        Same math as :func:`~kw_mm.cnn.functional.kw_attention_reference` (normalization, then
        ``(1 - t) * a + t * beta``, zero-cell column dropped). CAF is fused into one pass that
        writes only the kept columns: ``alpha = t * beta + z * ((1 - t) / (|z|_1 + eps))``.
        In evaluation without autograd the BatchNorm is folded into fc1
        (:mod:`~kw_mm.cnn.attention_fold`).
        """
        if hidden is None and self._folds_mlp():
            z = self._folded_logits(x)
        else:
            z = self.logits(x, hidden)
        t = self.mix_temperature
        if self.attention_function != 'caf':
            a = normalize_logits(z, self.attention_function)
            if t != 0.0:
                a = (1.0 - t) * a + t * self.beta
            return self.expand(a[..., :-1].contiguous())
        denom = torch.linalg.vector_norm(z, ord=1, dim=-1, keepdim=True) + CAF_EPS
        if t == 0.0:
            # At t = 0 (fine-tuning, and pretraining after the anneal) beta never enters.
            return self.expand(z[..., :-1] / denom)
        return self.expand(torch.addcdiv(self.beta[:, :-1] * t, z[..., :-1], denom,
                                         value=1.0 - t))

    def extra_repr(self) -> str:
        s = (f'in_channels={self.in_channels}, mixtures={self.num_mixtures}, '
             f'cells={self.num_cells}, temperature={self.temperature}')
        for name, default in (('attention_function', 'caf'), ('init_strategy', 'one-to-one'),
                              ('cell_access', 'shared')):
            if getattr(self, name) != default:
                s += f', {name}={getattr(self, name)!r}'
        return s
