"""Parameters and FLOPs of models with KernelWarehouse layers.

Convention (as mmengine/fvcore and the papers' tables): one fused multiply-add is one FLOP,
counted for one input sample.

What is counted for every KW convolution (analytically, from its geometry and the input/output
sizes recorded in one forward pass; the same numbers whatever kernel implementation runs):

- ``attention``: global average pool (``Cin * H * W`` adds), ``fc1`` (``Cin * hidden``), the
  norm (BatchNorm1d ``2 * hidden``, LayerNorm ``5 * hidden``, mmengine's conventions), ``fc2``
  (``hidden * (n + 1) * M``; with the non-local basis ``hidden * (L + NB + 1) * M`` plus
  ``fc3``: ``M * NB * (n - L)``) and the CAF normalization (``2 * (n + 1) * M``: the L1 sum and
  the division). ReLU is not counted (as mmengine); the temperature mix is a pretraining-only
  step and is not counted (t = 0 after the anneal).
- ``assembly``: the kernel from the attentions, ``alpha @ cells``: ``M * n * co * ci``.
- ``conv``: the convolution with the assembled kernel, counted like a static convolution
  (``Cout * Hout * Wout * Cin / groups * kh * kw``; the bias is not counted, as mmengine).

Everything else (stems, plain convolutions, norms, pooling, heads) is counted by mmengine's
``FlopAnalyzer`` (a jit trace of the model) with the KW layers' own subtrees taken out.
Parameters are every parameter of the model once (shared warehouses are counted once).
"""
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn

from kw_mm.cnn import KWAttention, KWConvNd
from kw_mm.cnn.fast import use_kw_impl
from kw_mm.cnn.warehouse import WarehouseManager

#: FLOPs of the norm of a KW attention per hidden unit (mmengine: BN eval 2, LN 5 with affine).
NORM_FLOPS = {'BatchNorm1d': 2, 'AttentionBatchNorm1d': 2, 'LayerNorm': 5}


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def attention_flops(attention: KWAttention, in_spatial: Sequence[int]) -> int:
    """FLOPs of one KW attention for one sample whose input has spatial size ``in_spatial``."""
    cin, mix, planes = attention.in_channels, attention.num_mixtures, attention.planes_per_mixture
    hidden = attention.fc1.out_features
    flops = cin * _prod(in_spatial)  # global average pool
    flops += cin * hidden  # fc1
    flops += NORM_FLOPS.get(type(attention.norm1).__name__, 2) * hidden
    flops += hidden * attention.fc2.out_features  # fc2
    if attention.use_basis:
        flops += mix * attention.fc3.in_features * attention.fc3.out_features  # fc3
        flops += planes * mix  # the learned bias added to the re-ordered logits
    flops += 2 * planes * mix  # CAF: L1 sum and division
    return flops


def kw_layer_flops(layer: KWConvNd, in_spatial: Sequence[int],
                   out_spatial: Sequence[int]) -> Dict[str, int]:
    """FLOPs of one KW convolution for one sample, split into attention / assembly / conv.

    Args:
        layer (KWConvNd): An allocated KW convolution.
        in_spatial (Sequence[int]): Spatial size of its input (e.g. ``(H, W)``).
        out_spatial (Sequence[int]): Spatial size of its output.

    Returns:
        dict: ``attention``, ``assembly``, ``conv`` and their ``total``.
    """
    geo = layer.geometry
    if geo is None:
        raise RuntimeError(f'{layer!r} is not allocated (WarehouseManager.allocate)')
    num_cells = layer.attention.num_cells
    assembly = geo.num_mixtures * num_cells * geo.cell_out * geo.cell_in
    conv = geo.out_channels * _prod(out_spatial) * geo.in_per_group * geo.groups_spatial
    attention = attention_flops(layer.attention, in_spatial)
    return dict(attention=attention, assembly=assembly, conv=conv,
                total=attention + assembly + conv)


def _record_kw_shapes(model: nn.Module, inputs: torch.Tensor) -> Dict[str, Tuple[list, list]]:
    """Run ``model`` once and record the spatial in/out sizes of every KW convolution call."""
    shapes: Dict[str, Tuple[list, list]] = OrderedDict()
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, KWConvNd):
            def hook(mod, args, output, name=name):
                if name in shapes:
                    raise RuntimeError(f'KW layer {name} ran twice in one forward; count it '
                                       'per call with kw_layer_flops')
                shapes[name] = (list(args[0].shape[2:]), list(output.shape[2:]))
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return shapes


def count_params(model: nn.Module) -> Dict[str, int]:
    """Parameters: total (each tensor once), warehouse cells, KW attentions and the rest."""
    total = sum(p.numel() for p in model.parameters())  # parameters() yields each tensor once
    cells = sum(p.numel() for m in model.modules() if isinstance(m, WarehouseManager)
                for p in m.weights)
    attention = sum(p.numel() for m in model.modules() if isinstance(m, KWAttention)
                    for p in m.parameters())
    return dict(params=total, params_warehouses=cells, params_attention=attention,
                params_other=total - cells - attention)


def count_params_and_flops(model: nn.Module,
                           input_shape: Union[Sequence[int], torch.Size] = (3, 224, 224)
                           ) -> Dict[str, Union[int, List[dict]]]:
    """Parameters and FLOPs of ``model`` for one input, KW assembly and attention included.

    Args:
        model (nn.Module): A module whose ``forward`` takes one image tensor (a backbone, an
            mmpretrain classifier in ``'tensor'`` mode, a detector's ``extract_feat``).
        input_shape (Sequence[int]): ``(C, H, W)`` of one sample (a leading batch of 1 is
            accepted). Defaults to ``(3, 224, 224)``.

    Returns:
        dict: ``params`` (and ``params_warehouses``, ``params_attention``, ``params_other``),
        ``flops`` (total) split into ``flops_kw_attention``, ``flops_kw_assembly``,
        ``flops_kw_conv`` and ``flops_other``, and ``kw_layers``: one row per KW convolution
        with its name, warehouse, ``M``, ``n`` and FLOPs.

    Example:
        >>> from mmpretrain.models import build_classifier  # doctest: +SKIP
        >>> stats = count_params_and_flops(backbone, (3, 224, 224))
        >>> stats['flops_kw_assembly'] > 0
        True
    """
    from mmengine.analysis import FlopAnalyzer

    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:
        if shape[0] != 1:
            raise ValueError(f'input_shape counts one sample; got a batch of {shape[0]}')
        shape = shape[1:]
    if len(shape) < 2:
        raise ValueError(f'input_shape must be (C, *spatial), got {tuple(input_shape)}')
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else 'cpu'
        inputs = torch.zeros((1, *shape), device=device)
        kw_shapes = _record_kw_shapes(model, inputs)
        analyzer = FlopAnalyzer(model, inputs)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        # The KW layers' own subtrees are counted analytically below and taken out of the
        # trace; they run the straightforward implementation there (mm and conv, which the
        # tracer knows; the fast paths use ops such as bmm(out=) that it cannot count).
        with torch.no_grad(), use_kw_impl('reference'):
            traced_total = analyzer.total()
            traced_kw = sum(analyzer.total(name) for name in kw_shapes)
    finally:
        model.train(was_training)

    modules = dict(model.named_modules())
    rows = []
    totals = dict(attention=0, assembly=0, conv=0)
    for name, (in_spatial, out_spatial) in kw_shapes.items():
        layer = modules[name]
        flops = kw_layer_flops(layer, in_spatial, out_spatial)
        for key in totals:
            totals[key] += flops[key]
        rows.append(dict(name=name, warehouse=layer.warehouse_name,
                         num_mixtures=layer.geometry.num_mixtures,
                         num_cells=layer.attention.num_cells, **flops))
    other = traced_total - traced_kw
    result: Dict[str, Union[int, List[dict]]] = count_params(model)
    result.update(flops=other + sum(totals.values()), flops_kw_attention=totals['attention'],
                  flops_kw_assembly=totals['assembly'], flops_kw_conv=totals['conv'],
                  flops_other=other, kw_layers=rows)
    return result


def format_count(value: float) -> str:
    """``11930000`` -> ``'11.93M'``, ``1.8e9`` -> ``'1.80G'``."""
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(value) >= scale:
            return f'{value / scale:.2f}{unit}'
    return str(int(value))


__all__ = ['count_params_and_flops', 'kw_layer_flops', 'attention_flops', 'count_params',
           'format_count']
