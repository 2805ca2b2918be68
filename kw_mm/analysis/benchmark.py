"""Speed and memory of models side by side: KW models against their plain twins, any set of
plain, DY-Conv, ODConv, CondConv, KW and KW* models, or one KW layer against ``nn.Conv2d``
(``tools/analysis/benchmark.py``).

One code path measures every set (:func:`measure_contestants`); a pair
(:func:`benchmark_pair`) is a side by side of two models (and, for its memory, the KW model's
straightforward implementation). What is measured, every contestant in turn in each round
(:mod:`kw_mm.analysis.measure`):

* eval latency at batch 1 and at batch ``N`` (``torch.inference_mode``), throughput ``N / t``;
* a training step at batch ``N``: forward with the loss, backward, optimizer step (the config's
  optimizer when a config is given, else SGD with momentum);
* peak memory of a training step (and of an eval pass): the largest amount of tensor memory
  allocated above what was allocated before the step (:func:`~.measure.peak_memory`).

Before timing, every model gets calibrated BatchNorm statistics
(:func:`~.contestants.calibrate_norms`): with the defaults of a fresh network the deep
activations of a KW model become denormal floats in eval mode, which would time the CPU's
denormal stalls instead of the layers.

A KW model can also run its straightforward implementation (``kw_mm.cnn.use_kw_impl
('reference')``, the correctness oracle): its peak memory is always reported, its speed with
``with_reference=True``. Contestants of other kinds (compiled, ONNX Runtime) are built with
:func:`~.contestants.make_contestant` (``kinds=``).
"""
import statistics
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from kw_mm.cnn import WarehouseManager
from kw_mm.cnn.fast import use_kw_impl
from .contestants import (Contestant, ModelSpec, build_optimizer, build_spec,  # noqa: F401
                          calibrate_norms, is_kw_model, load_spec, make_contestant, parse_pair,
                          plain_twin)
from .flops import count_params, count_params_and_flops
from .measure import (clear_memory, environment, interleaved_times, peak_memory,  # noqa: F401
                      ratio_stats, set_allocator, set_clock)

#: The metrics a side by side can measure: eval at batch 1, eval at batch N, training step.
METRICS = ('eval_b1', 'eval_bN', 'train')


# ----------------------------------------------------------------------------------- side by side
@dataclass
class Measurements:
    """What :func:`measure_contestants` measured, keyed by metric then contestant name."""

    times_ms: Dict[str, Dict[str, float]] = field(default_factory=dict)  # median ms
    raw_ms: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)  # every round
    ratios: Dict[str, Dict[str, float]] = field(default_factory=dict)  # x the base
    memory_mb: Dict[str, Dict[str, float]] = field(default_factory=dict)  # peak MB


def check_metrics(metrics: Sequence[str]) -> None:
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f'unknown metrics {sorted(unknown)}; choose from {", ".join(METRICS)}')


def make_inputs(batch: int, size: int, device: str = 'cpu') -> Dict[int, torch.Tensor]:
    """The seeded images of batch 1 and ``batch`` every contestant runs on."""
    gen = torch.Generator().manual_seed(0)
    return {b: torch.randn(b, 3, size, size, generator=gen).to(device) for b in (1, batch)}


def build_pair(kw: str, plain: str, batch: int, size: int, device: str = 'cpu'
               ) -> Tuple[Dict[int, torch.Tensor], Dict[str, Tuple[ModelSpec, nn.Module]]]:
    """The inputs (:func:`make_inputs`) and, per role (``'KW'``, ``'plain'``), the spec and the
    built model of a KW model and its plain twin, each with the BatchNorm statistics of the
    batch-``N`` input (:func:`~.contestants.calibrate_norms`)."""
    inputs = make_inputs(batch, size, device)
    built = {}
    for role, name in (('KW', kw), ('plain', plain)):
        spec = load_spec(name)
        model = build_spec(spec)
        if role == 'KW' and not is_kw_model(model):
            raise ValueError(f'{kw!r} has no KernelWarehouse layer')
        calibrate_norms(model, inputs[batch])
        built[role] = spec, model
    return inputs, built


def measure_contestants(contestants: Sequence[Contestant], base: str,
                        inputs: Dict[int, torch.Tensor], batch: int,
                        metrics: Sequence[str] = METRICS, reps: int = 10, warmup: int = 2,
                        memory: Optional[Dict[str, str]] = None,
                        memory_contestants: Optional[Sequence[Contestant]] = None,
                        log: Callable[[str], None] = print,
                        noun: str = 'contestants') -> Measurements:
    """Time ``contestants`` interleaved, each metric in turn, and measure their peak memory.

    Args:
        contestants (sequence[Contestant]): What is timed (any kinds); names must differ.
        base (str): The contestant every ratio refers to.
        inputs (dict[int, Tensor]): Images by batch size (1 and ``batch``).
        batch (int): ``N`` of ``'eval_bN'``, ``'train'`` and the memory peaks.
        metrics (sequence[str]): Any of :data:`METRICS`. Contestants without a training step
            (``trains = False``) are left out of ``'train'``.
        reps (int): Timed rounds per metric. Defaults to 10.
        warmup (int): Untimed rounds first. Defaults to 2.
        memory (dict[str, str], optional): Peak memory to measure, ``{'train': key,
            'eval': key}`` (either), reported under ``memory_mb[key]``. Defaults to none.
        memory_contestants (sequence[Contestant], optional): Whose memory is measured.
            Defaults to ``contestants``.
        log (callable): Progress lines. Defaults to ``print``.
        noun (str): What the progress lines call the contestants.
    """
    check_metrics(metrics)
    result = Measurements()
    for metric in metrics:
        b = 1 if metric == 'eval_b1' else batch
        train = metric == 'train'
        fns = {c.name: (c.train_fn if train else c.eval_fn)(inputs[b]) for c in contestants
               if c.trains or not train}
        log(f'  {metric}: {len(fns)} {noun} x {reps} rounds')
        times = interleaved_times(fns, reps, warmup)
        result.raw_ms[metric] = {k: [t * 1e3 for t in v] for k, v in times.items()}
        result.times_ms[metric] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        result.ratios[metric] = ({k: ratio_stats(times, k, base) for k in times}
                                 if base in times else {})
    for kind, key in (memory or {}).items():
        result.memory_mb[key] = {}
        for c in memory_contestants or contestants:
            if kind == 'train' and not c.trains:
                continue
            fn = (c.train_fn if kind == 'train' else c.eval_fn)(inputs[batch])
            fn()  # warm: optimizer state exists, caches filled
            c.release_gradients()  # freed outside the profiled step
            clear_memory()
            result.memory_mb[key][c.name] = peak_memory(fn, c.device) / 2**20
    return result


@dataclass
class SideBySideResult:
    """Measurements of a set of models; ``plain`` is the reference of every ratio."""

    plain: str
    names: List[str]
    batch: int
    params: Dict[str, int] = field(default_factory=dict)
    times_ms: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> name -> ms
    ratios: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> name -> x
    memory_mb: Dict[str, Dict[str, float]] = field(default_factory=dict)  # train/eval -> name

    def to_dict(self) -> dict:
        return dict(plain=self.plain, names=self.names, batch=self.batch, params=self.params,
                    times_ms=self.times_ms, ratios=self.ratios, memory_mb=self.memory_mb)


def _kind_name(name: str, kind: str) -> str:
    return name if kind == 'eager' else f'{name} ({kind})'


def benchmark_side_by_side(models: Sequence[str], batch: int = 8, size: int = 224,
                           reps: int = 10, warmup: int = 2, metrics: Sequence[str] = METRICS,
                           memory: bool = True, device: str = 'cpu',
                           log: Callable[[str], None] = print,
                           kinds: Sequence[str] = ('eager', )) -> SideBySideResult:
    """Time and measure ``models`` together, the first one being the plain reference.

    Args:
        models (Sequence[str]): Config paths (or paper variant names); the first is the plain
            model every ratio refers to.
        batch (int): ``N`` of the batch-N eval, of the training step and of the memory peaks.
        size (int): Input resolution. Defaults to 224.
        reps (int): Timed rounds per metric. Defaults to 10.
        warmup (int): Untimed rounds first. Defaults to 2.
        metrics (Sequence[str]): Any of ``'eval_b1'``, ``'eval_bN'``, ``'train'``.
        memory (bool): Measure the peak training and eval memory. Defaults to True.
        device (str): Defaults to ``'cpu'``.
        kinds (Sequence[str]): Contestant kinds each model runs as
            (:data:`~.contestants.CONTESTANT_KINDS`); other kinds than ``'eager'`` are named
            ``'name (kind)'``. Defaults to eager only.
    """
    if len(models) < 2:
        raise ValueError(f'side by side needs a plain model and at least one other, got '
                         f'{list(models)}')
    check_metrics(metrics)
    specs = [load_spec(m) for m in models]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f'models must differ, got {names}')
    inputs = make_inputs(batch, size, device)
    contestants = []
    for spec in specs:
        model = build_spec(spec)
        calibrate_norms(model, inputs[batch])
        contestants += [make_contestant(kind, _kind_name(spec.name, kind), model, spec, device)
                        for kind in kinds]
    all_names = [c.name for c in contestants]
    result = SideBySideResult(names[0], all_names, batch,
                              params={c.name: count_params(c.model)['params']
                                      for c in contestants})
    measured = measure_contestants(contestants, names[0], inputs, batch, metrics, reps, warmup,
                                   dict(train='train', eval='eval') if memory else None,
                                   log=log, noun='models')
    result.times_ms, result.ratios, result.memory_mb = (measured.times_ms, measured.ratios,
                                                        measured.memory_mb)
    return result


@dataclass
class PairResult:
    """Measurements of one KW model against its plain twin."""

    kw: str
    plain: str
    params: Dict[str, int] = field(default_factory=dict)
    times_ms: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> name -> ms
    ratios: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> name -> x
    memory_mb: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> name -> MB
    raw_ms: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    flops: Dict[str, Dict[str, int]] = field(default_factory=dict)  # name -> split, 1 image

    def to_dict(self) -> dict:
        return dict(kw=self.kw, plain=self.plain, params=self.params, times_ms=self.times_ms,
                    ratios=self.ratios, memory_mb=self.memory_mb, raw_ms=self.raw_ms,
                    flops=self.flops)


def benchmark_pair(kw: str, plain: str, batch: int = 8, size: int = 224, reps: int = 10,
                   warmup: int = 2, metrics: Sequence[str] = METRICS,
                   with_reference: bool = False, memory: bool = True, flops: bool = True,
                   device: str = 'cpu', log: Callable[[str], None] = print) -> PairResult:
    """Benchmark a KW model against its plain twin: a side by side of the two
    (:func:`measure_contestants`), with the FLOP counts and the reference's memory.

    Args:
        kw (str): KW config path or paper variant name.
        plain (str): The plain twin (config path or variant name).
        batch (int): ``N`` of the batch-N eval and of the training step. Defaults to 8.
        size (int): Input resolution. Defaults to 224.
        reps (int): Timed rounds per metric. Defaults to 10.
        warmup (int): Untimed rounds first. Defaults to 2.
        metrics (sequence[str]): Any of ``'eval_b1'``, ``'eval_bN'``, ``'train'``.
        with_reference (bool): Also time the KW model's straightforward implementation.
            Defaults to False (its peak memory is measured anyway).
        memory (bool): Measure peak memory. Defaults to True.
        flops (bool): Count FLOPs (``kw_mm.analysis.flops``; the KW assembly share is the floor
            of any KW/plain time ratio). Defaults to True.
        device (str): Defaults to ``'cpu'``.
    """
    check_metrics(metrics)
    kw_spec, plain_spec = load_spec(kw), load_spec(plain)
    kw_model, plain_model = build_spec(kw_spec), build_spec(plain_spec)
    if not is_kw_model(kw_model):
        raise ValueError(f'{kw!r} has no KernelWarehouse layer')
    result = PairResult(kw_spec.name, plain_spec.name,
                        params={kw_spec.name: count_params(kw_model)['params'],
                                plain_spec.name: count_params(plain_model)['params']})
    if flops:
        for name, model in ((kw_spec.name, kw_model), (plain_spec.name, plain_model)):
            stats = count_params_and_flops(model.eval(), (1, 3, size, size))
            result.flops[name] = {k: int(v) for k, v in stats.items() if k.startswith('flops')}
    contestants = [Contestant(kw_spec.name, kw_model, kw_spec, device=device),
                   Contestant(plain_spec.name, plain_model, plain_spec, device=device)]
    reference = Contestant(kw_spec.name + ' (reference)', kw_model, kw_spec, 'reference', device)
    reference.optimizer = contestants[0].optimizer  # the same model: one optimizer state
    inputs = make_inputs(batch, size, device)
    for c in contestants:  # the reference contestant shares the KW model
        calibrate_norms(c.model, inputs[batch])
    if with_reference:
        contestants.append(reference)
    measured = measure_contestants(contestants, plain_spec.name, inputs, batch, metrics, reps,
                                   warmup, dict(train='train', eval='eval_bN') if memory else None,
                                   contestants[:2] + [reference], log=log)
    result.times_ms, result.raw_ms, result.memory_mb = (measured.times_ms, measured.raw_ms,
                                                        measured.memory_mb)
    result.ratios = {metric: {k: v for k, v in ratios.items() if k != plain_spec.name}
                     for metric, ratios in measured.ratios.items()}
    return result


def make_kw_layer(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                  groups: int = 1, bias: bool = False, budget: float = 1.0, dim: int = 2
                  ) -> Tuple[nn.Module, nn.Module]:
    """A KW layer in a warehouse of its own (n = M * b) and the plain conv of the same shape."""
    layer_type = {1: 'conv1d', 2: 'conv2d', 3: 'conv3d'}[dim]
    manager = WarehouseManager(cell_num_ratio=budget)
    padding = kernel_size // 2
    net = nn.Module()
    net.manager = manager
    net.layer = manager.reserve(in_channels, out_channels, kernel_size, stride=stride,
                                padding=padding, groups=groups, bias=bias,
                                warehouse_name='layer', layer_type=layer_type)
    manager.store()
    manager.allocate(net)
    plain_cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
    plain = plain_cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                      groups=groups, bias=bias)
    return net, plain


def benchmark_layer(in_channels: int, out_channels: int, kernel_size: int, size: int,
                    batch: int = 8, stride: int = 1, groups: int = 1, bias: bool = False,
                    budget: float = 1.0, reps: int = 20, warmup: int = 3,
                    channels_last: bool = False) -> dict:
    """One KW layer (fast and reference) against ``nn.Conv2d`` of the same shape.

    Returns:
        dict: median ms per contestant and mode (``eval``: forward without grad, ``train``:
        forward and backward), ratios to the plain conv, peak training memory (MB).
    """
    net, plain = make_kw_layer(in_channels, out_channels, kernel_size, stride, groups, bias,
                               budget)
    layer = net.layer
    x = torch.randn(batch, in_channels, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_grad = x.clone().requires_grad_()
    spec = layer.geometry
    row = dict(layer=f'{in_channels}->{out_channels} k{kernel_size} s{stride} g{groups} '
               f'{size}x{size} b={budget:g}', batch=batch, num_mixtures=spec.num_mixtures,
               num_cells=layer.cells.shape[0], times_ms={}, ratios={}, memory_mb={})

    def run(module, impl, train):
        def step():
            with use_kw_impl(impl) if impl else nullcontext():
                if train:
                    out = module(x_grad)
                    out.sum().backward()
                else:
                    with torch.no_grad():
                        module(x)
        return step

    for mode in ('eval', 'train'):
        train = mode == 'train'
        net.train(train)
        plain.train(train)
        fns = {'kw': run(layer, None, train), 'kw reference': run(layer, 'reference', train),
               'conv': run(plain, None, train)}
        times = interleaved_times(fns, reps, warmup)
        row['times_ms'][mode] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        row['ratios'][mode] = {k: ratio_stats(times, k, 'conv') for k in ('kw', 'kw reference')}
        if train:
            for name, fn in fns.items():
                clear_memory()
                row['memory_mb'][name] = peak_memory(fn, torch.device('cpu')) / 2**20
    return row
