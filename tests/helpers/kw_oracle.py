"""The per-sample KW kernel of the layer oracles, written from the paper (Sec. 3), sharing no
code with kw_mm: each cell of the static kernel is the mixture ``sum_k alpha[j, k] * cells[k]``,
filled cell by cell in the mixture order ``j = (s * go + o) * gi + i``."""
import torch


def assemble_kernel(alpha: torch.Tensor, cells: torch.Tensor, out_channels: int,
                    in_per_group: int) -> torch.Tensor:
    """One sample's kernel ``[Cout, Cin/g, S]`` from its mixture weights ``alpha [M, n]`` and
    the warehouse ``cells [n, co, ci, 1, ...]``; ``S`` is the number of kernel positions."""
    n, co, ci = cells.shape[:3]
    flat = cells.reshape(n, co, ci)
    go, gi = out_channels // co, in_per_group // ci
    spatial = alpha.shape[0] // (go * gi)
    weight = alpha.new_zeros(out_channels, in_per_group, spatial)
    for s in range(spatial):
        for o in range(go):
            for i in range(gi):
                j = (s * go + o) * gi + i
                weight[o * co:(o + 1) * co, i * ci:(i + 1) * ci, s] = \
                    sum(alpha[j, k] * flat[k] for k in range(n))
    return weight


def kw_alpha(att, x: torch.Tensor, t: float, training: bool = False):
    """Mixture weights ``[B, M, n]`` and hidden vectors ``[B, h]`` of a KW attention (with a
    BatchNorm): GAP, fc1, BN (batch statistics when ``training`` with more than one sample,
    else the running ones), ReLU, fc2, CAF with the zero cell, mix with ``beta`` under ``t``."""
    batch, cin = x.shape[:2]
    h = x.reshape(batch, cin, -1).mean(-1) @ att.fc1.weight.t()
    if att.fc1.bias is not None:
        h = h + att.fc1.bias
    bn = att.norm1
    if training and batch > 1:
        mean, var = h.mean(0), h.var(0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    hidden = torch.relu((h - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias)
    n = att.num_cells
    z = (hidden @ att.fc2.weight.t() + att.fc2.bias).reshape(batch, att.num_mixtures, n + 1)
    alpha = ((1 - t) * z / (z.abs().sum(-1, keepdim=True) + 1e-3) + t * att.beta)[..., :n]
    return alpha, hidden
