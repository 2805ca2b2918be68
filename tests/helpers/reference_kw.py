"""A plain functional forward of the reference KernelWarehouse models (test oracle).

It runs the reference release's ResNet / MobileNetV2 / ConvNeXt (OSVAI/KernelWarehouse) directly
over a reference-format state dict, using only the layout data in ``tests/data/official_kw``
(``layouts.json``: warehouses, start cells, cell shapes, budgets) and the math of the paper
(Sec. 3, Appendix A). It deliberately imports nothing from kw_mm and shares no code
with it: every kernel is assembled cell by cell with explicit loops and every sample is convolved
on its own, so an error in kw_mm's vectorized kernels, cell order or temperature handling cannot
cancel out here.

Besides the forward it makes synthetic checkpoints: :func:`random_state_dict` (random tensors with
the released shapes and sensible scales) and :func:`calibrate` (BatchNorm running statistics taken
from a real batch, so that the activations of the network stay of order one at a given
temperature and the comparison of logits is sensitive to every layer).
"""
import json
import math
import os
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data',
                        'official_kw')
BN_EPS = 1e-5  # nn.BatchNorm1d/2d default
ATT_LN_EPS = 1e-5  # nn.LayerNorm default (attention of ConvNeXt)
CONVNEXT_LN_EPS = 1e-6  # ConvNeXt's own LayerNorms
CAF_EPS = 1e-3
#: Share of the batch mean that calibrated BatchNorm running means remove (see calibrate).
CENTERING = 0.5

StateDict = Dict[str, torch.Tensor]

_LAYOUTS: Optional[dict] = None


def layouts() -> dict:
    """Every released model's layout (``layouts.json``)."""
    global _LAYOUTS
    if _LAYOUTS is None:
        with open(os.path.join(DATA_DIR, 'layouts.json')) as f:
            _LAYOUTS = json.load(f)
    return _LAYOUTS


def released_names() -> List[str]:
    """Names of every released model that has a state-dict key file."""
    return sorted(f[:-5] for f in os.listdir(os.path.join(DATA_DIR, 'statedict'))
                  if f.endswith('.json'))


def statedict_shapes(name: str) -> List[Tuple[str, List[int]]]:
    """``[(key, shape), ...]`` of the released model ``name``, in the reference's order."""
    with open(os.path.join(DATA_DIR, 'statedict', f'{name}.json')) as f:
        return [(k, list(s)) for k, s in json.load(f)]


def family_of(name: str) -> str:
    for fam in ('resnet', 'mobilenetv2', 'convnext'):
        if fam in name:
            return fam
    raise KeyError(name)


# --------------------------------------------------------------------------- KW layer info
class KWLayerInfo:
    """Everything the forward needs to know about one KW layer of a released model."""

    def __init__(self, warehouse_index: int, warehouse: dict, layer: dict) -> None:
        self.warehouse_index = warehouse_index
        self.num_cells = warehouse['n_cells']
        self.budget = float(warehouse['cell_num_ratio'])
        self.cell_out, self.cell_in = warehouse['cell_shape'][:2]
        self.weight_shape = layer['weight_shape']
        self.stride = layer['stride']
        self.groups = layer['groups']
        self.num_mixtures = layer['num_local_mixture']
        self.start = layer['start_cell_idx']
        self.num_local = layer['num_local_cell']
        self.num_basis = layer['num_basis']  # None unless the non-local basis is used
        self.temp_bias_ones = layer['temp_bias_ones']

    def beta(self) -> Tuple[torch.Tensor, int]:
        """The one-hot initialization ``[M, n + 1]`` and the number of cells it consumes.

        b >= 1: mixture j takes cell start + j * int(b). b < 1 (k = int(1 / b)): mixture j takes
        the next free cell iff j % k == (j // k) % k, else its zero cell (last column).
        """
        n, m = self.num_cells, self.num_mixtures
        beta = torch.zeros(m, n + 1)
        if self.budget >= 1:
            step = int(self.budget)
            for j in range(m):
                beta[j, self.start + j * step] = 1
            used = m * step
        else:
            k = int(1 / self.budget)
            used = 0
            for j in range(m):
                if j % k == (j // k) % k:
                    beta[j, self.start + used] = 1
                    used += 1
                else:
                    beta[j, n] = 1
        return beta, used


def kw_layers(name: str) -> Dict[str, KWLayerInfo]:
    """The KW layers of the released model ``name``, by module name.

    Checks on the way that the start cells of each warehouse follow one another without gap and
    use every cell exactly once (the one-to-one initialization of the paper).
    """
    out = {}
    for w, wh in enumerate(layouts()[name]['warehouses']):
        cursor = 0
        for layer in wh['layers']:
            info = KWLayerInfo(w, wh, layer)
            beta, used = info.beta()
            assert info.start == cursor, (name, layer['name'], info.start, cursor)
            assert int(beta.sum()) == info.temp_bias_ones, (name, layer['name'])
            cursor += used
            out[layer['name']] = info
        assert cursor == wh['n_cells'], (name, wh['warehouse'], cursor, wh['n_cells'])
    return out


# --------------------------------------------------------------------------- the forward
class ReferenceForward:
    """Logits of a released reference model, computed from its state dict.

    Args:
        name (str): Released model name, e.g. ``'kw1x_resnet18'`` or ``'resnet50'``.
        state_dict (dict): Reference-format state dict (keys as in ``statedict/<name>.json``).
        temperature (float): The attention temperature t (0 after pretraining).
        calibrate (bool): If True, every BatchNorm first replaces its running statistics in
            ``state_dict`` (in place) by the statistics of the current batch (slightly
            perturbed), then normalizes with them. Used to make synthetic checkpoints.
    """

    def __init__(self, name: str, state_dict: StateDict, temperature: float = 0.0,
                 calibrate: bool = False, generator: Optional[torch.Generator] = None) -> None:
        self.name = name
        self.sd = state_dict
        self.t = float(temperature)
        self.calibrating = calibrate
        self.gen = generator
        self.family = family_of(name)
        self.kw = kw_layers(name) if name in layouts() and 'warehouses' in layouts()[name] else {}
        self.consumed = set()
        self.trace: List[Tuple[str, torch.Tensor]] = []  # (block, output): for debugging

    # ---- tensors
    def p(self, key: str) -> torch.Tensor:
        self.consumed.add(key)
        return self.sd[key]

    def has(self, key: str) -> bool:
        return key in self.sd

    # ---- normalization
    def batch_norm(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        if self.calibrating:
            # Deep features of a random network differ little between random images: a
            # channel's batch variance can be tiny next to its mean. Plain batch statistics
            # would then divide a small difference by a small spread and amplify rounding
            # without bound (a chaotic network on which no two implementations agree, even in
            # float64). Centering on half the mean and scaling by the second moment keeps
            # every normalized channel of order one and its gain to perturbations bounded.
            mean = x.mean(dims).detach()
            second = (x.detach() ** 2).mean(dims)
            jitter = 1 + 0.1 * (torch.rand(mean.shape, generator=self.gen) - 0.5)
            shift = 0.05 * (torch.rand(mean.shape, generator=self.gen) - 0.5)
            self.sd[f'{prefix}.running_mean'] = CENTERING * mean + shift.to(mean.dtype) * \
                second.sqrt()
            self.sd[f'{prefix}.running_var'] = second * jitter.to(second.dtype) + 1e-3
        self.p(f'{prefix}.num_batches_tracked')
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = self.p(f'{prefix}.running_mean').view(shape)
        var = self.p(f'{prefix}.running_var').view(shape)
        w = self.p(f'{prefix}.weight').view(shape)
        b = self.p(f'{prefix}.bias').view(shape)
        return (x - mean) / torch.sqrt(var + BN_EPS) * w + b

    def layer_norm_last(self, x: torch.Tensor, prefix: str, eps: float) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * self.p(f'{prefix}.weight') + \
            self.p(f'{prefix}.bias')

    def layer_norm_channels(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return self.layer_norm_last(x.permute(0, 2, 3, 1), prefix,
                                    CONVNEXT_LN_EPS).permute(0, 3, 1, 2)

    def linear(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        out = x @ self.p(f'{prefix}.weight').t()
        if self.has(f'{prefix}.bias'):
            out = out + self.p(f'{prefix}.bias')
        return out

    # ---- KernelWarehouse
    def attention(self, x: torch.Tensor, prefix: str, info: KWLayerInfo) -> torch.Tensor:
        """Mixture weights ``[B, M, n]`` of one KW layer."""
        batch, n, m = x.shape[0], info.num_cells, info.num_mixtures
        pooled = x.reshape(batch, x.shape[1], -1).mean(-1)
        h = self.linear(pooled, f'{prefix}.fc1')
        if self.family == 'convnext':
            h = self.layer_norm_last(h, f'{prefix}.norm1', ATT_LN_EPS)
        else:
            h = self.batch_norm(h, f'{prefix}.norm1')
        h = torch.relu(h)
        z = self.linear(h, f'{prefix}.fc2')
        if info.num_basis is None:
            z = z.reshape(batch, m, n + 1)
        else:
            # Non-local basis: per mixture [local | basis | zero] -> [nonlocal | local | zero]
            # with the local cells at the layer's own place in the warehouse.
            rows = z.reshape(batch, m, info.num_local + info.num_basis + 1)
            local = rows[..., :info.num_local]
            basis = rows[..., info.num_local:info.num_local + info.num_basis]
            zero = rows[..., -1:]
            nonlocal_ = basis @ self.p(f'{prefix}.fc3.weight').t()  # [B, M, n - L]
            z = torch.cat([nonlocal_[..., :info.start], local, nonlocal_[..., info.start:], zero],
                          dim=-1)
            z = z + self.p(f'{prefix}.basis_bias').reshape(m, n + 1)
        # Contrasting-driven attention function over the n cells and the zero cell.
        a = z / (z.abs().sum(-1, keepdim=True) + CAF_EPS)
        beta, _ = info.beta()
        a = (1 - self.t) * a + self.t * beta
        return a[..., :n]

    def kernels(self, alpha: torch.Tensor, cells: torch.Tensor,
                info: KWLayerInfo) -> torch.Tensor:
        """Per-sample kernels ``[B, Cout, Cin/groups, *k]``, filled cell by cell."""
        cout, cin = info.weight_shape[:2]
        ksize = info.weight_shape[2:]
        co, ci = info.cell_out, info.cell_in
        go, gi = cout // co, cin // ci
        spatial = math.prod(ksize)
        assert spatial * go * gi == info.num_mixtures
        flat_cells = cells.reshape(cells.shape[0], co, ci)
        mixed = torch.einsum('bjk,kpq->bjpq', alpha, flat_cells)  # [B, M, co, ci]
        weight = alpha.new_zeros(alpha.shape[0], cout, cin, spatial)
        for s in range(spatial):  # spatial position outermost, then output, then input block
            for o in range(go):
                for i in range(gi):
                    j = (s * go + o) * gi + i
                    weight[:, o * co:(o + 1) * co, i * ci:(i + 1) * ci, s] = mixed[:, j]
        return weight.reshape(alpha.shape[0], cout, cin, *ksize)

    def kw_conv(self, x: torch.Tensor, name: str, stride: int, padding: int,
                groups: int) -> torch.Tensor:
        info = self.kw[name]
        assert list(info.stride) == [stride] * len(info.stride), (name, info.stride, stride)
        assert info.groups == groups, (name, info.groups, groups)
        cells = self.p(f'warehouse_manager.weights.{info.warehouse_index}')
        assert cells.shape[0] == info.num_cells
        alpha = self.attention(x, f'{name}.attention', info)
        weight = self.kernels(alpha, cells, info)
        conv = F.conv2d if x.dim() == 4 else F.conv1d
        outs = [conv(x[b:b + 1], weight[b], None, stride, padding, 1, groups)
                for b in range(x.shape[0])]
        out = torch.cat(outs)
        if self.has(f'{name}.bias'):
            out = out + self.p(f'{name}.bias').view(1, -1, *([1] * (x.dim() - 2)))
        return out

    def conv(self, x: torch.Tensor, name: str, stride: int = 1, padding: int = 0,
             groups: int = 1) -> torch.Tensor:
        """A convolution that is a KW layer or a plain one, as the checkpoint says."""
        if name in self.kw:
            return self.kw_conv(x, name, stride, padding, groups)
        bias = self.p(f'{name}.bias') if self.has(f'{name}.bias') else None
        return F.conv2d(x, self.p(f'{name}.weight'), bias, stride, padding, 1, groups)

    # ---- families
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = getattr(self, f'_{self.family}')(x)
        unused = set(self.sd) - self.consumed
        assert not unused, f'reference forward did not use {sorted(unused)[:5]}'
        return logits

    def _resnet(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.batch_norm(self.conv(x, 'conv1', 2, 3), 'bn1'))
        x = F.max_pool2d(x, 3, 2, 1)
        bottleneck = self.has('layer1.0.conv3.attention.fc1.weight') or \
            self.has('layer1.0.conv3.weight')
        for stage in range(1, 5):
            block = 0
            while self.has(f'layer{stage}.{block}.bn1.weight'):
                pre = f'layer{stage}.{block}'
                stride = 2 if stage > 1 and block == 0 else 1
                if bottleneck:  # torchvision v1.5: the stride sits on the 3x3 conv
                    out = torch.relu(self.batch_norm(self.conv(x, f'{pre}.conv1'), f'{pre}.bn1'))
                    out = torch.relu(self.batch_norm(self.conv(out, f'{pre}.conv2', stride, 1),
                                                     f'{pre}.bn2'))
                    out = self.batch_norm(self.conv(out, f'{pre}.conv3'), f'{pre}.bn3')
                else:
                    out = torch.relu(self.batch_norm(self.conv(x, f'{pre}.conv1', stride, 1),
                                                     f'{pre}.bn1'))
                    out = self.batch_norm(self.conv(out, f'{pre}.conv2', 1, 1), f'{pre}.bn2')
                if self.has(f'{pre}.downsample.1.weight'):
                    x = self.batch_norm(self.conv(x, f'{pre}.downsample.0', stride),
                                        f'{pre}.downsample.1')
                x = torch.relu(out + x)
                self.trace.append((pre, x))
                block += 1
        return self.linear(x.mean((2, 3)), 'fc')

    # (expand ratio t, output channels c, blocks n, stride s) of MobileNetV2
    MBV2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                    (6, 160, 3, 2), (6, 320, 1, 1)]

    def _conv_bn_relu6(self, x: torch.Tensor, pre: str, stride: int, groups: int,
                       ksize: int) -> torch.Tensor:
        x = self.conv(x, f'{pre}.0', stride, (ksize - 1) // 2, groups)
        return torch.clamp(self.batch_norm(x, f'{pre}.1'), 0, 6)

    def _mobilenetv2(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_bn_relu6(x, 'features.0', 2, 1, 3)
        idx = 1
        for expand, _, blocks, first_stride in self.MBV2_SETTING:
            for i in range(blocks):
                pre = f'features.{idx}.conv'
                stride = first_stride if i == 0 else 1
                inp = x.shape[1]
                out, sub = x, 0
                if expand != 1:
                    out = self._conv_bn_relu6(out, f'{pre}.0', 1, 1, 1)
                    sub = 1
                hidden = out.shape[1]
                out = self._conv_bn_relu6(out, f'{pre}.{sub}', stride, hidden, 3)
                out = self.batch_norm(self.conv(out, f'{pre}.{sub + 1}'), f'{pre}.{sub + 2}')
                x = x + out if stride == 1 and inp == out.shape[1] else out
                self.trace.append((pre, x))
                idx += 1
        x = self._conv_bn_relu6(x, f'features.{idx}', 1, 1, 1)
        x = x.mean((2, 3))
        if 'classifier.1.conv' in self.kw:  # KW 1/2x: a KWLinear classifier
            return self.kw_conv(x[:, :, None], 'classifier.1.conv', 1, 0, 1)[:, :, 0]
        return self.linear(x, 'classifier.1' if self.has('classifier.1.weight') else 'classifier')

    def _convnext(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(4):
            if i == 0:
                x = self.conv(x, 'downsample_layers.0.0', 4)
                x = self.layer_norm_channels(x, 'downsample_layers.0.1')
            else:
                x = self.layer_norm_channels(x, f'downsample_layers.{i}.0')
                x = self.conv(x, f'downsample_layers.{i}.1', 2)
            block = 0
            while self.has(f'stages.{i}.{block}.gamma'):
                pre = f'stages.{i}.{block}'
                dim = x.shape[1]
                out = self.conv(x, f'{pre}.dwconv', 1, 3, dim)
                out = self.layer_norm_channels(out, f'{pre}.norm')
                gamma = self.p(f'{pre}.gamma').reshape(1, dim, 1, 1)
                if f'{pre}.pwconv1' in self.kw:  # KW: 1x1 convolutions on [B, C, H, W]
                    out = F.gelu(self.conv(out, f'{pre}.pwconv1'))
                    out = self.conv(out, f'{pre}.pwconv2')
                else:  # the plain ConvNeXt: Linear layers on [B, H, W, C]
                    out = out.permute(0, 2, 3, 1)
                    out = self.linear(F.gelu(self.linear(out, f'{pre}.pwconv1')), f'{pre}.pwconv2')
                    out = out.permute(0, 3, 1, 2)
                x = x + gamma * out
                self.trace.append((pre, x))
                block += 1
        x = self.layer_norm_last(x.mean((2, 3)), 'norm', CONVNEXT_LN_EPS)
        return self.linear(x, 'head')


def reference_logits(name: str, state_dict: StateDict, x: torch.Tensor,
                     temperature: float = 0.0) -> torch.Tensor:
    """Logits of the released model ``name`` (eval mode) at temperature ``temperature``."""
    with torch.no_grad():
        return ReferenceForward(name, state_dict, temperature)(x)


# --------------------------------------------------------------------------- synthetic checkpoints
def _fan_in(shape: List[int]) -> int:
    return math.prod(shape[1:]) if len(shape) > 1 else shape[0]


def random_state_dict(name: str, seed: int = 0) -> StateDict:
    """Random tensors with the shapes of the released model ``name``.

    Scales: convolutions and linears Kaiming-like; warehouse cells so that a mixture of all cells
    at t = 0 has about a plain kernel's scale; attention logits made mostly of their (random)
    biases, with a small input-dependent part (well-conditioned, see below); norm weights in
    [0.5, 1.5]; other biases small; layer scales (ConvNeXt gamma) in [0.3, 1] so that every
    block matters. BatchNorm running stats are placeholders (mean 0, var 1): call
    :func:`calibrate` before comparing outputs.
    """
    gen = torch.Generator().manual_seed(seed)
    info = layouts().get(name, {})
    cells_n = {i: w['n_cells'] for i, w in enumerate(info.get('warehouses', []))}
    sd = {}
    for key, shape in statedict_shapes(name):
        leaf = key.rsplit('.', 1)[-1]
        if key.startswith('warehouse_manager.weights.'):
            n = cells_n[int(leaf)]
            std = math.sqrt(2.0 / shape[2]) * math.sqrt(n + 1) / 1.25
            t = torch.randn(shape, generator=gen) * std
        elif leaf == 'num_batches_tracked':
            t = torch.tensor(100, dtype=torch.long)
        elif leaf == 'running_mean':
            t = torch.zeros(shape)
        elif leaf == 'running_var':
            t = torch.ones(shape)
        elif leaf == 'gamma':
            t = 0.3 + 0.7 * torch.rand(shape, generator=gen)
        elif '.attention.' in key and leaf in ('bias', 'basis_bias'):
            t = torch.randn(shape, generator=gen)  # attention logits: mostly these biases
        elif leaf == 'bias':
            t = 0.1 * torch.randn(shape, generator=gen)
        elif leaf == 'weight' and len(shape) == 1:  # BatchNorm / LayerNorm
            t = 0.5 + torch.rand(shape, generator=gen)
        elif leaf == 'weight' and ('.attention.fc2' in key or '.attention.fc3' in key):
            # A small input-dependent part of the attention logits (next to their biases): a
            # random attention that varied fully with its input would make the random network
            # chaotic (perturbations grow ~5x per block), and no two implementations would
            # agree on it.
            t = torch.randn(shape, generator=gen) * 0.1 / math.sqrt(_fan_in(shape))
        elif leaf == 'weight':
            gain = 1.0 if key.startswith(('fc.', 'head.', 'classifier')) else 2.0
            t = torch.randn(shape, generator=gen) * math.sqrt(gain / _fan_in(shape))
        else:
            raise KeyError(f'no rule for {key} {shape}')
        sd[key] = t
    return sd


def calibrate(name: str, state_dict: StateDict, x: torch.Tensor, temperature: float,
              seed: int = 0, return_logits: bool = False):
    """A copy of ``state_dict`` whose BatchNorm running statistics fit ``x`` at ``temperature``.

    The running stats stay positive variances and are perturbed by a few percent, so they are
    not exactly the batch statistics of any input. With ``return_logits`` the eval-mode logits
    of the calibrated model for ``x`` come too (the calibrating pass already normalizes with the
    final statistics, so no second forward is needed).
    """
    sd = dict(state_dict)
    if not any(k.endswith('.running_var') for k in sd):  # ConvNeXt: LayerNorms only
        return (sd, reference_logits(name, sd, x, temperature)) if return_logits else sd
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        logits = ReferenceForward(name, sd, temperature, calibrate=True, generator=gen)(x)
    return (sd, logits) if return_logits else sd
