"""Warehouses: construction from a list of layers, cell allocation and initialization.

Usage (three phases, as a backbone does it)::

    manager = WarehouseManager(cell_num_ratio=1.0)
    conv = manager.reserve(64, 64, 3, padding=1, warehouse_name='stage0')  # a KWConv2d
    ...                                  # build the rest of the network
    manager.store()                      # one warehouse of cells per name
    manager.allocate(model)              # attentions, one-to-one beta, cell init (module order)

The manager must be a submodule of the model (its cells are the model's parameters, saved under
``<path>.weights.<i>``), and every KW layer is allocated exactly once.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .attention import NORM_LAYERS, KWAttention, check_attention_options
from .functional import count_mixtures
from .kw_star import KWStarAttention
from .kw_conv import KW_LAYERS, KWConvNd, KWLinear
from .transposed_cells import TransposedCells

PLAIN_LAYERS = {'conv1d': nn.Conv1d, 'conv2d': nn.Conv2d, 'conv3d': nn.Conv3d, 'linear': nn.Linear}
PerWarehouse = Union[float, Sequence[float], Mapping[str, float]]
#: The knobs that take one value per warehouse, and their values when nothing is given.
KNOB_DEFAULTS: Dict[str, float] = dict(reduction=1 / 16, cell_num_ratio=1.0,
                                       cell_inplane_ratio=1.0, cell_outplane_ratio=1.0)


def parse_sharing_range(sharing_range: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """``'layer_conv'`` (the reference's string) or ``('layer', 'conv')`` -> a tuple of fields."""
    if isinstance(sharing_range, str):
        return tuple(f for f in sharing_range.split('_') if f)
    return tuple(sharing_range)


def resolve_per_warehouse(value: PerWarehouse, names: Sequence[str], what: str = 'value',
                          strict: bool = True) -> Dict[str, float]:
    """The value of a per-warehouse knob for every warehouse, by name.

    A scalar applies to every warehouse; a sequence gives the values in warehouse order (one
    value applies to all); a mapping is looked up, for a warehouse ``stage6_layer_pwconv1``, by
    its full name, its kind (the last ``_`` field, ``'pwconv1'``), its kind without the index
    (``'pwconv'``), then ``'default'``.

    Args:
        value (float | Sequence | Mapping): The knob's value.
        names (Sequence[str]): The warehouse names, in order.
        what (str): The knob's name, for messages. Defaults to 'value'.
        strict (bool): Also refuse mapping entries that match no warehouse (a user's value;
            a backbone's preset may name kinds a custom layout lacks). Defaults to True.

    Raises:
        ValueError: If a warehouse has no value, a sequence has the wrong length, or (strict)
            an entry matches no warehouse.
    """
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return {name: float(value[0]) for name in names}
        if len(value) != len(names):
            raise ValueError(f'{what} has {len(value)} values for {len(names)} warehouses '
                             f'{list(names)}')
        return {name: float(v) for name, v in zip(names, value)}
    if not isinstance(value, Mapping):
        return {name: float(value) for name in names}
    resolved, used = {}, set()
    for name in names:
        kind = name.rsplit('_', 1)[-1]
        for key in (name, kind, kind.rstrip('0123456789'), 'default'):
            if key in value:
                resolved[name] = float(value[key])
                used.add(key)
                break
        else:
            raise ValueError(f'{what} {dict(value)} has no entry for warehouse {name!r} and no '
                             f'"default"; warehouses: {list(names)}')
    unused = set(value) - used - {'default'}
    if strict and unused:
        raise ValueError(f'{what} has entries {sorted(unused)} that match no warehouse; '
                         f'warehouses: {list(names)}')
    return resolved


@dataclass
class WarehouseSpec:
    """The resolved layout of one warehouse (what Table 14 of the paper lists)."""

    name: str
    cell_num_ratio: float
    reduction: float
    cell_out: int
    cell_in: int
    cell_kernel: tuple
    num_mixtures: int  # m
    num_cells: int  # n
    layers: List[tuple] = field(default_factory=list)  # weight shapes, reservation order

    @property
    def cell_shape(self) -> tuple:
        return (self.cell_out, self.cell_in, *self.cell_kernel)


class WarehouseManager(nn.Module):
    """Holds the warehouses of a network and allocates its KW layers.

    Args:
        reduction (float | list | dict, optional): Attention hidden ratio. Defaults to the
            preset, else 1/16.
        cell_num_ratio (float | list | dict, optional): The budget ``b``:
            n = max(int(m * b), 1). Defaults to the preset, else 1.
        cell_inplane_ratio (float | list | dict, optional): Cell input channels =
            gcd(Cin/groups) * ratio, which must be a whole number (never truncated). Defaults
            to the preset, else 1.
        cell_outplane_ratio (float | list | dict, optional): Cell output channels =
            gcd(Cout) * ratio. Defaults to the preset, else 1.
        sharing_range (sequence[str] | str): Name fields to merge, as the reference: with
            ``('layer', 'conv')`` (or ``'layer_conv'``) the layer ``stage1_layer3_conv0`` goes
            to the warehouse ``stage1_layer_conv``. Defaults to ().
        nonlocal_basis_ratio (float): Below 1, attentions use the non-local basis.
            Defaults to 1.
        norm (str): Attention norm, ``'BN'`` or ``'LN'``. Defaults to ``'BN'``.
        attention_function (str): ``'caf'`` (the paper's), ``'softmax'``, ``'sigmoid'`` or
            ``'relu-l1'`` (paper Table 8). Defaults to ``'caf'``.
        init_strategy (str): The attention initialization, ``'one-to-one'`` (the paper's),
            ``'all-to-one'``, ``'many-to-one'`` (b >= 2), ``'one-to-many'`` (b < 1) or
            ``'none'`` (paper Tables 9 and 13; see :func:`~kw_mm.cnn.attention.init_beta`).
            Defaults to ``'one-to-one'``.
        partition (bool): Cut kernels into cells. ``False`` (paper Table 5) makes a cell a
            whole kernel (stored as its 1-in-space slices, mixed with one attention per
            kernel) and splits every warehouse by kernel shape. Defaults to True.
        share_cells (bool): Let every mixture draw on every cell of its warehouse. ``False``
            (Table 6, "without sharing") gives each mixture its own ``b`` cells.
            Defaults to True.
        presets (dict, optional): A backbone's value of the knobs given as None (the paper's
            model), e.g. ``dict(cell_num_ratio=dict(pwconv=0.5, default=1))``.
        omni_attention (bool): KW* (paper Table 17): every attention also has ODConv's
            channel, filter and spatial heads (:class:`~kw_mm.cnn.kw_star.KWStarAttention`).
            Defaults to False.

    A per-warehouse knob is a scalar, a sequence in warehouse order, or a mapping from
    warehouse name or kind to value (with an optional ``'default'`` entry); it is resolved once
    per warehouse by :func:`resolve_per_warehouse` at :meth:`store`, when every name is known.
    """

    def __init__(self,
                 reduction: Optional[PerWarehouse] = None,
                 cell_num_ratio: Optional[PerWarehouse] = None,
                 cell_inplane_ratio: Optional[PerWarehouse] = None,
                 cell_outplane_ratio: Optional[PerWarehouse] = None,
                 sharing_range: Union[Sequence[str], str] = (),
                 nonlocal_basis_ratio: float = 1.0,
                 norm: str = 'BN',
                 attention_function: str = 'caf',
                 init_strategy: str = 'one-to-one',
                 partition: bool = True,
                 share_cells: bool = True,
                 presets: Optional[Mapping[str, PerWarehouse]] = None,
                 omni_attention: bool = False) -> None:
        super().__init__()
        if norm not in NORM_LAYERS:
            raise ValueError(f'norm must be one of {sorted(NORM_LAYERS)}, got {norm!r}')
        if not partition and not share_cells:
            raise ValueError('partition=False and share_cells=False cannot be combined: a whole '
                             'kernel of its own is a plain layer')
        self.cell_access = ('shared' if partition and share_cells else
                            'private' if partition else 'whole-kernel')
        check_attention_options(attention_function, init_strategy, self.cell_access)
        self.attention_function = attention_function
        self.init_strategy = init_strategy
        self.partition = partition
        # whole kernels can only be mixed with kernels of their own shape
        self.split_by_shape = not partition
        unknown = set(presets or {}) - set(KNOB_DEFAULTS)
        if unknown:
            raise TypeError(f'unknown per-warehouse knobs {sorted(unknown)}; knobs: '
                            f'{list(KNOB_DEFAULTS)}')
        #: The user's knobs (None: the preset) and the presets, resolved at store().
        self.knobs = dict(reduction=reduction, cell_num_ratio=cell_num_ratio,
                          cell_inplane_ratio=cell_inplane_ratio,
                          cell_outplane_ratio=cell_outplane_ratio)
        self.presets = dict(KNOB_DEFAULTS, **(presets or {}))
        self.sharing_range = parse_sharing_range(sharing_range)
        self.nonlocal_basis_ratio = nonlocal_basis_ratio
        self.norm = norm
        self.omni_attention = omni_attention
        self._reserved: Dict[str, List[tuple]] = {}
        self.specs: List[WarehouseSpec] = []
        self.weights = nn.ParameterList()
        #: Inference copies of warehouses as ``[n, ci, co]`` (see :meth:`transposed_cells`).
        self._transposed = TransposedCells()

    # ------------------------------------------------------------------ phase 1: reserve
    def fuse_name(self, name: str) -> str:
        """Merge the name fields covered by ``sharing_range`` (``layer3`` -> ``layer``)."""
        fused = []
        for part in name.split('_'):
            for shared in self.sharing_range:
                if part.startswith(shared):
                    part = shared
            fused.append(part)
        return '_'.join(fused)

    def reserve(self,
                in_channels: int,
                out_channels: int,
                kernel_size: Union[int, Sequence[int]] = 1,
                stride: Union[int, Sequence[int]] = 1,
                padding: Union[int, Sequence[int]] = 0,
                dilation: Union[int, Sequence[int]] = 1,
                groups: int = 1,
                bias: bool = True,
                warehouse_name: str = 'default',
                enabled: bool = True,
                layer_type: str = 'conv2d') -> nn.Module:
        """Create a KW layer recorded in ``warehouse_name``, or a plain layer if not enabled.

        Args:
            layer_type (str): ``'conv1d'``, ``'conv2d'``, ``'conv3d'`` or ``'linear'``.
        """
        if layer_type not in KW_LAYERS:
            raise ValueError(f'layer_type must be one of {sorted(KW_LAYERS)}, got {layer_type!r}')
        if self.specs:
            raise RuntimeError('reserve() after store(): build every layer before storing')
        if not enabled:
            if layer_type == 'linear':
                return nn.Linear(in_channels, out_channels, bias=bias)
            return PLAIN_LAYERS[layer_type](in_channels, out_channels, kernel_size, stride=stride,
                                            padding=padding, dilation=dilation, groups=groups,
                                            bias=bias)
        name = self.fuse_name(warehouse_name)
        if layer_type == 'linear':
            layer = KWLinear(in_channels, out_channels, bias=bias, warehouse_name=name)
            conv = layer.conv
        else:
            layer = conv = KW_LAYERS[layer_type](in_channels, out_channels, kernel_size, stride,
                                                 padding, dilation, groups, bias,
                                                 warehouse_name=name)
        conv.set_owner(self)
        shape = conv.weight_shape
        if self.split_by_shape:
            # only same-dimensioned kernels share: one warehouse per kernel shape
            name = conv.warehouse_name = f"{name}_{'x'.join(map(str, shape))}"
        self._reserved.setdefault(name, []).append(shape)
        return layer

    # ------------------------------------------------------------------ phase 2: store
    def _resolve_knobs(self) -> Dict[str, Dict[str, float]]:
        """knob -> warehouse name -> value: the user's value, else the preset."""
        names = list(self._reserved)
        resolved = {}
        for knob, value in self.knobs.items():
            given = value is not None
            resolved[knob] = resolve_per_warehouse(value if given else self.presets[knob],
                                                   names, knob, strict=given)
        return resolved

    def store(self) -> None:
        """Create one warehouse of cells for every reserved name (reservation order)."""
        if self.specs:
            raise RuntimeError('store() was already called')
        if not self._reserved:
            raise RuntimeError('no KW layer was reserved')
        knobs = self._resolve_knobs()
        for name, shapes in self._reserved.items():
            spec = self._make_spec(name, shapes, **{k: v[name] for k, v in knobs.items()})
            self.specs.append(spec)
            # Every cell is overwritten by allocate(); randn only fills the storage.
            self.weights.append(nn.Parameter(torch.randn(spec.num_cells, *spec.cell_shape)))

    def _make_spec(self, name: str, shapes: List[tuple], reduction: float,
                   cell_num_ratio: float, cell_inplane_ratio: float,
                   cell_outplane_ratio: float) -> WarehouseSpec:
        ratio, in_ratio, out_ratio = cell_num_ratio, cell_inplane_ratio, cell_outplane_ratio
        if ratio <= 0:
            raise ValueError(f'cell_num_ratio (budget b) must be > 0, got {ratio} for {name!r}')
        dims = {len(s) for s in shapes}
        if len(dims) != 1:
            raise ValueError(f'warehouse {name!r} mixes layers of different dimensions: {shapes}')
        out_gcd = math.gcd(*[s[0] for s in shapes])
        in_gcd = math.gcd(*[s[1] for s in shapes])
        if not self.partition and (out_ratio, in_ratio) != (1.0, 1.0):
            raise ValueError(f'warehouse {name!r}: partition=False makes a cell a whole kernel, '
                             f'so the cell ratios must be 1, got cell_outplane_ratio={out_ratio:g}'
                             f' and cell_inplane_ratio={in_ratio:g}')
        cell_out = self._cell_size(name, 'cell_outplane_ratio', out_ratio, out_gcd, 'output')
        cell_in = self._cell_size(name, 'cell_inplane_ratio', in_ratio, in_gcd, 'input')
        num_mixtures = 0
        for shape in shapes:
            if shape[0] % cell_out or shape[1] % cell_in:
                raise ValueError(
                    f'warehouse {name!r}: cell size [{cell_out}, {cell_in}] (gcd [{out_gcd}, '
                    f'{in_gcd}] x ratios [{out_ratio}, {in_ratio}]) cannot divide a layer of '
                    f'kernel shape {list(shape)}; use cell ratios that give divisors of every '
                    "layer's channels")
            num_mixtures += count_mixtures(shape, cell_out, cell_in)
        num_cells = max(int(num_mixtures * ratio), 1)
        return WarehouseSpec(name, ratio, reduction, cell_out, cell_in,
                             (1, ) * (len(shapes[0]) - 2), num_mixtures, num_cells, list(shapes))

    @staticmethod
    def _cell_size(name: str, what: str, ratio: float, gcd: int, side: str) -> int:
        """``gcd * ratio`` channels, refused (not truncated) unless a whole number >= 1."""
        exact = gcd * ratio
        size = round(exact)
        if size < 1 or abs(exact - size) > 1e-6 * max(1.0, exact):
            raise ValueError(
                f'warehouse {name!r}: {what} {ratio:g} x gcd {gcd} = {exact:g} {side} channels '
                f'per cell is not a whole number >= 1; choose a ratio r for which r x {gcd} (the '
                f"greatest common divisor of the layers' {side} channels) is one")
        return int(size)

    # ------------------------------------------------------------------ phase 3: allocate
    def allocate(self, model: nn.Module) -> None:
        """Build every attention, hand out cells one-to-one and initialize them.

        Layers are visited in ``model.modules()`` order, as the reference does, so the cell
        assignment (``beta``) matches the released checkpoints.
        """
        if not self.specs:
            raise RuntimeError('allocate() before store()')
        index = {spec.name: i for i, spec in enumerate(self.specs)}
        next_cell = [0] * len(self.specs)
        seen = 0
        for layer in model.modules():
            if not isinstance(layer, KWConvNd) or layer.owner is not self:
                continue  # a plain module, or a KW layer of another manager
            if layer.geometry is not None:
                raise RuntimeError(f'{layer!r} was already allocated')
            w = index[layer.warehouse_name]
            spec = self.specs[w]
            geo_out, geo_in = spec.cell_out, spec.cell_in
            num_mixtures = count_mixtures(layer.weight_shape, geo_out, geo_in)
            kwargs = dict(reduction=spec.reduction, norm=self.norm,
                          cell_num_ratio=spec.cell_num_ratio,
                          nonlocal_basis_ratio=self.nonlocal_basis_ratio, start_cell=next_cell[w],
                          attention_function=self.attention_function,
                          init_strategy=self.init_strategy, cell_access=self.cell_access)
            if self.omni_attention:
                attention = KWStarAttention(layer.in_channels, num_mixtures, spec.num_cells,
                                            layer.out_channels, math.prod(layer.kernel_size),
                                            **kwargs)
            else:
                attention = KWAttention(layer.in_channels, num_mixtures, spec.num_cells,
                                        **kwargs)
            start = next_cell[w]
            end = attention.assign_cells(start, spec.cell_num_ratio)
            if end > spec.num_cells:
                # Only b < 1 gets here: the one-to-one rule serves some mixtures of a layer
                # by its zero cell, and for some layer sizes it needs more than int(m * b).
                k = int(1 / spec.cell_num_ratio)
                raise ValueError(
                    f'warehouse {spec.name!r} (b={spec.cell_num_ratio:g}, m={spec.num_mixtures}, '
                    f'n={spec.num_cells}) ran out of cells ({end} > {spec.num_cells}) while '
                    f'allocating {layer!r} ({num_mixtures} mixtures): below b = 1, mixture j of '
                    f'a layer takes a cell iff j % k == (j // k) % k with k = int(1 / b) = {k}; '
                    'use b = 1/k with cell ratios that cut every layer into a multiple of k * k '
                    'mixtures (as released: b = 1/2 with cell ratios 1/2)')
            layer.bind(self, w, geo_out, geo_in, attention)
            self._init_cells(w, start, end)
            next_cell[w] = end
            seen += 1
        for spec, used in zip(self.specs, next_cell):
            if used != spec.num_cells:
                raise RuntimeError(f'warehouse {spec.name!r}: {used} of {spec.num_cells} cells '
                                   'were assigned; every KW layer must be inside the model '
                                   'passed to allocate()')

    @torch.no_grad()
    def _init_cells(self, w: int, start: int, end: int) -> None:
        """Kaiming (fan_out) on the layer's slice seen as ``[-1, ci, 1, ...]``.

        With b = 1 a layer's slice has the plain kernel's fan-out, so its scale matches.
        """
        if end > start:
            cells = self.weights[w].data[start:end]
            nn.init.kaiming_normal_(cells.view(-1, *cells.shape[2:]), mode='fan_out',
                                    nonlinearity='relu')

    # ------------------------------------------------------------------ inference
    def transposed_cells(self, index: int) -> torch.Tensor:
        """Warehouse ``index`` as ``[n, ci, co]``, for the inference path of small maps
        (:mod:`~kw_mm.cnn.fast_im2col_inference`): made once and kept while the warehouse is
        unchanged (:class:`~kw_mm.cnn.transposed_cells.TransposedCells`), dropped when the
        module switches between training and evaluation, or by
        :meth:`clear_transposed_cells`."""
        return self._transposed.get(index, self.weights[index])

    def clear_transposed_cells(self) -> None:
        """Drop the warehouses kept transposed for inference (their memory is freed). Needed
        only after a write through ``.data`` that leaves the values
        :class:`~kw_mm.cnn.transposed_cells.TransposedCells` samples unchanged."""
        self._transposed.clear()

    def train(self, mode: bool = True) -> 'WarehouseManager':
        # A switch between training and evaluation starts over (mmengine's loops switch after
        # their hooks have swapped weights through .data, as the EMA hook does). eval() on a
        # module already in evaluation keeps the copies: inference code that calls eval()
        # before every batch would otherwise transpose the warehouses at every batch, a
        # visible share of a forward pass.
        if mode != self.training:
            self.clear_transposed_cells()
        return super().train(mode)

    # ------------------------------------------------------------------ helpers
    def freeze(self, warehouse_names: Sequence[str]) -> None:
        """Stop the cells of the named warehouses from training."""
        names = {spec.name: i for i, spec in enumerate(self.specs)}
        for name in warehouse_names:
            if name not in names:
                raise KeyError(f'no warehouse {name!r}; warehouses: {list(names)}')
            self.weights[names[name]].requires_grad_(False)

    def summary(self) -> List[dict]:
        """One row per warehouse: name, cell shape, m, n and b."""
        return [dict(name=s.name, cell_shape=list(s.cell_shape), m=s.num_mixtures, n=s.num_cells,
                     b=s.cell_num_ratio, num_layers=len(s.layers)) for s in self.specs]

    def extra_repr(self) -> str:
        return ', '.join(f'{s.name}: m={s.num_mixtures} n={s.num_cells}' for s in self.specs)
