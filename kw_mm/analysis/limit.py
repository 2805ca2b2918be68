"""The limit of a KW layer or model on the machine at hand, and how far the fast paths are from it.

A KW layer does three things: its attention, the assembly of its kernels (``alpha @ cells``, a
matrix product whose output can stay in the cache and be consumed at once) and the
convolution with them. Nothing can make it cheaper than

    limit = the plain convolution of the same shape (measured, same input)
            + the assembly: its FLOPs at the machine's GEMM rate (measured,
              :func:`kw_mm.analysis.machine_report.measure_gemm_rate`), or, where that is
              longer, the warehouse read once at the machine's memory bandwidth
              (measured, :func:`kw_mm.analysis.machine_report.measure_memory_bandwidth`)
            + its attention (measured),

and a KW model no cheaper than its plain twin plus the assembly and the attentions of all its
KW layers. The memory term is the roofline of the assembly: however the kernels are made, every
cell of the warehouse has to come from memory once per call (each KW layer mixes all the cells
of its warehouse, 12-50 MB for the late ResNet layers, far more than the L2). It matters at
batch 1, where the assembly has too few FLOPs per byte: KW 1x ResNet18 reads 167 MB of
warehouses per image. ``KW / limit`` is then a ratio that means the same on any CPU: how much
of the time the implementation adds beyond what the machine must do. (For a training step the
limit counts the assembly three times, forward and the two gradient products, and the
attentions three times their forward: an estimate, the backward of the attention is not
timed.)

:func:`profile_limits` times every KW layer of a model alone; :func:`pair_limits` gives the
model limits of a :class:`~kw_mm.analysis.benchmark.PairResult`
(:mod:`kw_mm.analysis.report` prints them and holds them to their targets).
"""
import statistics
from contextlib import nullcontext
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from kw_mm.cnn import KWConvNd
from kw_mm.cnn.explain import explain_layer, record_kw_inputs
from kw_mm.cnn.fast import use_kw_impl
from .benchmark import PairResult
from .contestants import build_spec, calibrate_norms, load_spec
from .measure import interleaved_times

#: How often the assembly and the attention run in a training step, relative to eval.
TRAIN_FACTOR = 3


# ----------------------------------------------------------------------------------- layers
def capture_kw_inputs(model: nn.Module, inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The input of every KW layer in one forward pass of ``model`` (no gradients)."""
    with torch.inference_mode():
        return record_kw_inputs(model, lambda: model(inputs, mode='tensor'))


def plain_conv(layer: KWConvNd) -> nn.Module:
    """``nn.Conv{1,2,3}d`` of the KW layer's shape (eval mode)."""
    conv_cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[layer.dim]
    return conv_cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                    layer.padding, layer.dilation, layer.groups,
                    bias=layer.bias is not None).eval()


def _inference(fn, x: torch.Tensor, impl: Optional[str] = None):
    def step() -> None:
        with torch.inference_mode(), use_kw_impl(impl) if impl else nullcontext():
            fn(x)
    return step


def assembly_flops(layer: KWConvNd, batch: int) -> int:
    """FLOPs of assembling the kernels of ``batch`` samples: ``B * M * n * co * ci``."""
    geo = layer.geometry
    return batch * geo.num_mixtures * layer.attention.num_cells * geo.cell_out * geo.cell_in


def warehouse_bytes(layer: KWConvNd) -> int:
    """Bytes of the warehouse ``layer`` mixes: all its cells, read by every assembly."""
    cells = layer.cells
    return cells.numel() * cells.element_size()


def memory_excess_ms(layer: KWConvNd, batch: int, gemm_flops: float,
                     bandwidth: Optional[float]) -> float:
    """How much longer reading the warehouse once at ``bandwidth`` (bytes/s) takes than the
    assembly FLOPs of ``batch`` samples at the GEMM rate (0 if shorter or not measured)."""
    if not bandwidth:
        return 0.0
    return max(0.0, (warehouse_bytes(layer) / bandwidth -
                     assembly_flops(layer, batch) / gemm_flops) * 1e3)


def assembly_ms(layer: KWConvNd, batch: int, gemm_flops: float,
                bandwidth: Optional[float] = None) -> float:
    """The least time of assembling ``batch`` samples' kernels: the FLOPs at the GEMM rate,
    or the warehouse read once at ``bandwidth`` (bytes/s) if that takes longer."""
    return (assembly_flops(layer, batch) / gemm_flops * 1e3 +
            memory_excess_ms(layer, batch, gemm_flops, bandwidth))


def layer_limits(model: nn.Module, inputs: Dict[str, torch.Tensor], gemm_flops: float,
                 reps: int = 5, warmup: int = 1, with_reference: bool = False,
                 bandwidth: Optional[float] = None) -> List[dict]:
    """Every KW layer of ``model`` alone on its captured input: the fast path, the plain
    convolution, the attention (interleaved), the limit and the plan the fast path chose.

    Returns:
        list[dict]: per layer ``name``, ``shape``, ``input``, ``mixtures``, ``cells``,
        ``plan`` (:meth:`~kw_mm.cnn.plan.LayerPlan.describe`, inference), ``path``, ``ms`` (``kw``,
        ``conv``, ``attention``, ``assembly`` (:func:`assembly_ms`), ``limit``, and
        ``reference`` if asked) and ``kw_over_limit``.
    """
    modules = dict(model.named_modules())
    rows = []
    for name, x in inputs.items():
        layer = modules[name]
        fns = {'kw': _inference(layer, x), 'conv': _inference(plain_conv(layer), x),
               'attention': _inference(layer.attention, x)}
        if with_reference:
            fns['reference'] = _inference(layer, x, 'reference')
        times = interleaved_times(fns, reps, warmup)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        ms['assembly'] = assembly_ms(layer, x.shape[0], gemm_flops, bandwidth)
        ms['limit'] = ms['conv'] + ms['assembly'] + ms['attention']
        geo = layer.geometry
        plan = explain_layer(geo, x.shape, layer.cells.dtype, x.device,
                             num_cells=layer.cells.shape[0])
        rows.append(dict(name=name, shape=list(geo.weight_shape), input=list(x.shape),
                         stride=list(geo.stride), mixtures=geo.num_mixtures,
                         cells=layer.attention.num_cells, path=plan.path,
                         blocks=len(plan.blocks), plan=plan.describe(), ms=ms,
                         kw_over_limit=ms['kw'] / ms['limit']))
    return rows


def prepared_model(spec: str, batch: int, size: int) -> nn.Module:
    """The benchmark's KW model: built as :func:`~kw_mm.analysis.benchmark.build_spec` does,
    BatchNorm statistics calibrated, in eval mode."""
    model = build_spec(load_spec(spec))
    gen = torch.Generator().manual_seed(0)
    calibrate_norms(model, torch.randn(batch, 3, size, size, generator=gen))
    return model.eval()


def profile_limits(spec: str, gemm_flops: float, batch: int = 8, size: int = 224,
                   reps: int = 5, warmup: int = 1, with_reference: bool = False,
                   bandwidth: Optional[float] = None) -> List[dict]:
    """:func:`layer_limits` of every KW layer of ``spec`` (a config or a paper variant) at
    ``batch`` x ``size``."""
    model = prepared_model(spec, batch, size)
    gen = torch.Generator().manual_seed(1)
    inputs = capture_kw_inputs(model, torch.randn(batch, 3, size, size, generator=gen))
    return layer_limits(model, inputs, gemm_flops, reps, warmup, with_reference, bandwidth)


def attention_ms(model: nn.Module, inputs: Dict[str, torch.Tensor], reps: int = 5,
                 warmup: int = 1) -> float:
    """Median time of all KW attentions of ``model`` on their captured inputs, in a row."""
    modules = dict(model.named_modules())

    def step() -> None:
        with torch.inference_mode():
            for name, x in inputs.items():
                modules[name].attention(x)
    return statistics.median(interleaved_times({'a': step}, reps, warmup)['a']) * 1e3


# ----------------------------------------------------------------------------------- models
def pair_limits(spec: str, result: PairResult, gemm_flops: float, batch: int = 8,
                size: int = 224, reps: int = 5, warmup: int = 1,
                bandwidth: Optional[float] = None) -> dict:
    """The limit of the KW model of ``result`` for each metric it measured, and its layers.

    Args:
        spec (str): The KW model's config or variant (as given to ``benchmark_pair``).
        result (PairResult): Its measurements; needs the FLOP count (``flops=True``).
        gemm_flops (float): The machine's GEMM rate (FLOP/s).
        bandwidth (float, optional): The machine's memory read rate (bytes/s); without it
            the assembly is counted at the GEMM rate only.

    Returns:
        dict: ``models``: metric -> ``plain_ms``, ``kw_ms``, ``assembly_ms``, ``attention_ms``,
        ``limit_ms``, ``kw_over_plain``, ``kw_over_limit``, ``limit_over_plain``; ``layers``: the
        :func:`layer_limits` rows at batch ``batch``.
    """
    flops = result.flops.get(result.kw, {}).get('flops_kw_assembly')
    if flops is None:
        raise ValueError(f'{result.kw}: the limit needs the FLOP count (benchmark with flops)')
    model = prepared_model(spec, batch, size)
    gen = torch.Generator().manual_seed(1)
    big = torch.randn(batch, 3, size, size, generator=gen)
    inputs = {batch: capture_kw_inputs(model, big), 1: capture_kw_inputs(model, big[:1])}
    layers = layer_limits(model, inputs[batch], gemm_flops, reps, warmup, bandwidth=bandwidth)
    kw_layers = [m for m in model.modules() if isinstance(m, KWConvNd)]
    models = {}
    for metric, times in result.times_ms.items():
        b = 1 if metric == 'eval_b1' else batch
        factor = TRAIN_FACTOR if metric == 'train' else 1
        att = (sum(r['ms']['attention'] for r in layers) if b == batch else
               attention_ms(model, inputs[1], reps, warmup))
        # the counted FLOPs at the GEMM rate, plus what the layers whose warehouse read takes
        # longer than their FLOPs (batch 1) add beyond it
        asm = flops * b / gemm_flops * 1e3 + sum(
            memory_excess_ms(m, b, gemm_flops, bandwidth) for m in kw_layers)
        plain, kw = times.get(result.plain), times.get(result.kw)
        if plain is None or kw is None:
            continue
        limit = plain + factor * (asm + att)
        # KW/plain as the pair table gives it (median of the per-round ratios), so the two
        # tables of one run never disagree; the ratio of the medians if there is none.
        ratio = result.ratios.get(metric, {}).get(result.kw)
        models[metric] = dict(plain_ms=plain, kw_ms=kw, assembly_ms=factor * asm,
                              attention_ms=factor * att, limit_ms=limit,
                              kw_over_plain=kw / plain if ratio is None else ratio,
                              kw_over_limit=kw / limit, limit_over_plain=limit / plain)
    return dict(models=models, layers=layers)


def load_ratios(quiet: PairResult, loaded: PairResult) -> Dict[str, float]:
    """Per metric, KW/plain under load divided by KW/plain quiet."""
    out = {}
    for metric, ratios in loaded.ratios.items():
        if quiet.kw in ratios and quiet.kw in quiet.ratios.get(metric, {}):
            out[metric] = ratios[quiet.kw] / quiet.ratios[metric][quiet.kw]
    return out
