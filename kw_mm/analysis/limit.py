"""The limit of a KW layer or model on the machine at hand, and how far the fast paths are from it.

A KW layer does three things: its attention, the assembly of its kernels (``alpha @ cells``, a
matrix product whose output can stay in the cache and be consumed at once) and the
convolution with them. Nothing can make it cheaper than

    limit = the plain convolution of the same shape (measured, same input)
            + the assembly: its FLOPs at the machine's GEMM rate (measured,
              :func:`kw_mm.analysis.machine.measure_gemm_rate`), or, where that is
              longer, the warehouse read once at the machine's memory bandwidth
              (measured, :func:`kw_mm.analysis.machine.measure_memory_bandwidth`)
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
model limits of a :class:`~kw_mm.analysis.benchmark.PairResult`; :func:`target_report` says which
of the issue's targets are met and, for each miss, where the time goes.
"""
import statistics
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from kw_mm.cnn import KWConvNd
from kw_mm.cnn.explain import explain_layer, record_kw_inputs
from kw_mm.cnn.fast import use_kw_impl
from .benchmark import (TARGETS, PairResult, build_spec, calibrate_norms, interleaved_times,
                        load_spec)

#: Every KW layer of these models within this factor of its limit (eval, batch N).
LAYER_TARGETS: Dict[str, float] = {
    'kw1x-resnet18_8xb32_in1k': 1.5,
    'kw4x-resnet18_8xb32_in1k': 1.5,
    'kw1x-resnet50_8xb512-300e_in1k': 1.5,
}
#: Under a competing busy process, KW/plain may grow by at most this factor (eval, batch N).
LOAD_TARGET = 1.5
#: How often the assembly and the attention run in a training step, relative to eval.
TRAIN_FACTOR = 3
#: Layers listed in the profile of a miss.
PROFILE_TOP = 4


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


def _inference(fn, x: torch.Tensor, impl: str = 'fast'):
    def step() -> None:
        with torch.inference_mode(), use_kw_impl(impl):
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
        ``plan`` (:meth:`~kw_mm.cnn.explain.LayerPlan.describe`), ``path``, ``ms`` (``kw``,
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
        plan = explain_layer(geo, x.shape, x.element_size(), num_cells=layer.cells.shape[0])
        rows.append(dict(name=name, shape=list(geo.weight_shape), input=list(x.shape),
                         stride=list(geo.stride), mixtures=geo.num_mixtures,
                         cells=layer.attention.num_cells, path=plan.inference_path,
                         blocks=plan.inference_blocks, plan=plan.describe(), ms=ms,
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


# ----------------------------------------------------------------------------------- output
METRIC_NAMES = {'eval_b1': 'eval b1', 'eval_bN': 'eval bN', 'train': 'train bN'}
TARGET_KEYS = {'eval_b1': 'eval_b1', 'eval_bN': 'eval_b8', 'train': 'train'}


def format_model_limits(limits: Dict[str, dict], batch: int) -> str:
    """Per model and metric: KW, plain and limit times, KW/plain, limit/plain and KW/limit."""
    lines = ['| Model | Metric | KW ms | Plain ms | Assembly ms | Attention ms | Limit ms | '
             'KW/plain | Limit/plain | KW/limit |', '|' + '---|' * 10]
    for name, lim in limits.items():
        for metric, m in lim['models'].items():
            label = METRIC_NAMES[metric].replace('bN', f'b{batch}')
            lines.append(
                f"| {name} | {label} | {m['kw_ms']:.1f} | {m['plain_ms']:.1f} | "
                f"{m['assembly_ms']:.1f} | {m['attention_ms']:.1f} | {m['limit_ms']:.1f} | "
                f"{m['kw_over_plain']:.2f}x | {m['limit_over_plain']:.2f}x | "
                f"{m['kw_over_limit']:.2f}x |")
    return '\n'.join(lines)


def format_layer_limits(rows: Sequence[dict]) -> str:
    """Per KW layer: shape, path, times, limit and KW/limit, and the totals."""
    has_ref = any('reference' in r['ms'] for r in rows)
    head = ['Layer', 'Kernel', 'Input', 'M', 'n', 'Path (blocks)', 'KW ms'] + (
        ['Reference ms'] if has_ref else []) + ['Conv ms', 'Attention ms', 'Assembly ms',
                                                'Limit ms', 'KW/conv', 'KW/limit']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    keys = ['kw'] + (['reference'] if has_ref else []) + ['conv', 'attention', 'assembly',
                                                           'limit']
    total = dict.fromkeys(keys, 0.0)
    for r in rows:
        ms = r['ms']
        for k in keys:
            total[k] += ms.get(k, 0.0)
        lines.append(f"| {r['name']} | {'x'.join(map(str, r['shape']))} | "
                     f"{'x'.join(map(str, r['input']))} | {r['mixtures']} | {r['cells']} | "
                     f"{r['path']} ({r['blocks']}) | " +
                     ' | '.join(f'{ms.get(k, 0.0):.2f}' for k in keys) +
                     f" | {ms['kw'] / ms['conv']:.2f}x | {r['kw_over_limit']:.2f}x |")
    lines.append('| total | | | | | | ' + ' | '.join(f'{total[k]:.1f}' for k in keys) +
                 f" | {total['kw'] / total['conv']:.2f}x | {total['kw'] / total['limit']:.2f}x |")
    return '\n'.join(lines)


def _layer_profile_text(rows: Sequence[dict], top: int = PROFILE_TOP) -> str:
    """The layers that lose most against their limits, and the totals."""
    worst = sorted(rows, key=lambda r: r['ms']['kw'] - r['ms']['limit'], reverse=True)[:top]
    kw = sum(r['ms']['kw'] for r in rows)
    parts = [f"KW layers {kw:.1f} ms vs limit {sum(r['ms']['limit'] for r in rows):.1f} ms "
             f"(conv {sum(r['ms']['conv'] for r in rows):.1f}, attention "
             f"{sum(r['ms']['attention'] for r in rows):.1f}, assembly "
             f"{sum(r['ms']['assembly'] for r in rows):.1f})"]
    for r in worst:
        ms = r['ms']
        parts.append(f"{r['name']} {ms['kw']:.1f} ms vs limit {ms['limit']:.1f} "
                     f"({r['kw_over_limit']:.2f}x, {r['path']}, conv {ms['conv']:.1f})")
    return '; '.join(parts)


def _against(value: float, target: float) -> str:
    """``value`` to two decimals, or three where two would read as the target itself (a
    1.502x miss of a 1.5x target is printed 1.502x, not 1.50x)."""
    text = f'{value:.2f}'
    return f'{value:.3f}' if float(text) == target and value != target else text


def target_report(results: Sequence[PairResult], limits: Dict[str, dict], batch: int,
                  loads: Optional[Dict[str, Dict[str, float]]] = None) -> str:
    """Every target of the issue as met or missed; each miss with its profile.

    Args:
        results: The pair results.
        limits: ``name -> pair_limits(...)`` for those results.
        batch: The batch size N (the targets are set for 8).
        loads: ``name -> load_ratios(...)`` if measured under load.
    """
    lines = []

    def add(label: str, value: float, target: float, profile: Optional[str]) -> None:
        met = value <= target
        lines.append(f"- {label}: {_against(value, target)}x (target <= {target:g}x): "
                     f"{'met' if met else 'MISSED'}")
        if not met and profile:
            lines.append(f'  profile: {profile}')

    for r in results:
        lim = limits.get(r.kw, {})
        rows = lim.get('layers', [])
        profile = _layer_profile_text(rows) if rows else None
        targets = TARGETS.get(r.kw, {}) if batch == 8 else {}
        for metric, key in TARGET_KEYS.items():
            ratio = r.ratios.get(metric, {}).get(r.kw)
            if key in targets and ratio is not None:
                m = lim.get('models', {}).get(metric)
                extra = (f"limit/plain {m['limit_over_plain']:.2f}x, KW/limit "
                         f"{m['kw_over_limit']:.2f}x; " if m else '')
                if profile and metric == 'eval_b1':
                    extra += f'layers measured at batch {batch}: '
                add(f'{r.kw} {METRIC_NAMES[metric]} KW/plain', ratio, targets[key],
                    extra + (profile or ''))
        if r.kw in LAYER_TARGETS and rows:
            worst = max(rows, key=lambda row: row['kw_over_limit'])
            over = [row for row in rows if row['kw_over_limit'] > LAYER_TARGETS[r.kw]]
            text = ', '.join(f"{row['name']} {row['kw_over_limit']:.2f}x ({row['path']})"
                             for row in over)
            add(f'{r.kw} every KW layer KW/limit (worst {worst["name"]})',
                worst['kw_over_limit'], LAYER_TARGETS[r.kw],
                f'{len(over)} of {len(rows)} layers over: {text}')
        for metric, value in (loads or {}).get(r.kw, {}).items():
            add(f'{r.kw} {METRIC_NAMES[metric]} KW/plain under load / quiet', value,
                LOAD_TARGET, None)
    return '\n'.join(lines)

