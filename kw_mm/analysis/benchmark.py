"""Speed and memory of KW models against their plain twins (``tools/analysis/benchmark.py``).

Every measurement runs the contestants **interleaved**: one repetition times each contestant
once, in turn, so that a slow phase of a shared machine hits all of them alike; ratios are the
median over repetitions of the per-repetition ratios. What is measured:

* eval latency at batch 1 and at batch ``N`` (``torch.inference_mode``), throughput ``N / t``;
* a training step at batch ``N``: forward with the loss, backward, optimizer step (the config's
  optimizer when a config is given, else SGD with momentum);
* peak memory of a training step (and of an eval pass): the largest amount of tensor memory
  allocated above what was allocated before the step, read from the allocation events of
  ``torch.profiler`` (works on the CPU, where torch keeps no allocator statistics); on CUDA
  ``torch.cuda.max_memory_allocated``.

Before timing, both models get calibrated BatchNorm statistics (:func:`calibrate_norms`): with
the defaults of a fresh network the deep activations of a KW model become denormal floats in
eval mode, which would time the CPU's denormal stalls instead of the layers.

A KW model can also run its straightforward implementation (``kw_mm.cnn.use_kw_impl
('reference')``, the correctness oracle): its peak memory is always reported, its speed with
``with_reference=True``.
"""
import gc
import os
import os.path as osp
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from kw_mm.apis import build_model, get_model_index, load_config, model_config
from kw_mm.cnn import KWConvNd, WarehouseManager
from kw_mm.cnn.fast import use_kw_impl
from kw_mm.cnn.machine import cpu_model
from .flops import count_params, count_params_and_flops

#: The issue's target set: (KW config, plain twin), 2 threads, batch 8, 224x224. The configs are
#: named as in the model index (found in the installed package outside a checkout).
PRESETS: Dict[str, dict] = {
    'paper-cpu': dict(
        pairs=[
            ('configs/kw1x-resnet18_8xb32_in1k.py', 'configs/resnet18_8xb32_in1k.py'),
            ('configs/kw4x-resnet18_8xb32_in1k.py', 'configs/resnet18_8xb32_in1k.py'),
            ('configs/kw1x-resnet50_8xb512-300e_in1k.py', 'configs/resnet50_8xb512-300e_in1k.py'),
            ('configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
             'configs/mobilenet-v2_8xb32-150e_in1k.py'),
        ],
        threads=2, batch=8, size=224),
}

#: Targets (KW time / plain time, 2 threads, batch 8, 224x224, on any x86 CPU), keyed by KW
#: config name and metric; the per-layer and under-load targets are in
#: :mod:`kw_mm.analysis.limit`.
TARGETS: Dict[str, Dict[str, float]] = {
    'kw1x-resnet18_8xb32_in1k': dict(eval_b8=1.5, train=1.8, eval_b1=1.5),
    'kw4x-resnet18_8xb32_in1k': dict(eval_b8=2.2),
    'kw1x-resnet50_8xb512-300e_in1k': dict(eval_b8=1.8),
    'kw1x-mobilenet-v2_8xb32-150e_in1k': dict(eval_b8=1.5),
}


# ----------------------------------------------------------------------------------- models
@dataclass
class ModelSpec:
    """A model to benchmark: an mmpretrain config file or a paper variant name."""

    name: str
    cfg: dict  # the model config
    source: str  # the config path or the variant name
    optim_cfg: Optional[dict] = None  # the config's optim_wrapper, if any


def _config_file(path: str) -> str:
    """``path``, or the installed config the model index names ``path`` (``configs/...``, as
    the presets do) when there is no such file here."""
    if osp.isfile(path):
        return path
    info = get_model_index().by_config(path)
    if info is not None and osp.normpath(info.config) == osp.normpath(path):
        return info.config_path
    raise FileNotFoundError(f'config {path!r} does not exist')


def load_spec(spec: str) -> ModelSpec:
    """A :class:`ModelSpec` from a config path (``*.py``) or a paper variant name."""
    if spec.endswith('.py'):
        cfg = load_config(_config_file(spec))
        if 'model' not in cfg:
            raise ValueError(f'config {spec!r} has no "model"')
        name = osp.splitext(osp.basename(spec))[0]
        optim = cfg.get('optim_wrapper')
        return ModelSpec(name, model_config(cfg), spec,
                         optim.to_dict() if hasattr(optim, 'to_dict') else optim)
    variants = get_model_index().variants
    if spec in variants:
        return ModelSpec(spec, variants[spec].model_cfg(), spec)
    raise ValueError(f'{spec!r} is neither a config file (*.py) nor a paper variant; '
                     f'variants: {sorted(variants)}')


def plain_twin(spec: str) -> str:
    """The plain model a KW model is compared with, as the model index names it.

    A config ``dir/kw1x-resnet18_8xb32_in1k.py`` has the twin ``dir/resnet18_8xb32_in1k.py``
    (the index's config if ``dir`` has no such file); a paper variant the baseline of its
    family (``kw4x_resnet18`` -> ``resnet18``).
    """
    index = get_model_index()
    if spec.endswith('.py'):
        info = index.by_config(spec)
        if info is None or info.plain_twin_name is None:
            raise ValueError(f'no plain twin found for {spec!r} (the model index names none); '
                             'give the pair explicitly as KW_CONFIG:PLAIN_CONFIG')
        twin = index.get_model(info.plain_twin_name)
        beside = osp.join(osp.dirname(spec), osp.basename(twin.config))
        return beside if osp.isfile(beside) else twin.config_path
    if spec in index.variants:
        return index.variants[spec].baseline.name
    raise ValueError(f'no plain twin for {spec!r}')


def parse_pair(text: str) -> Tuple[str, str]:
    """``KW[:PLAIN]`` -> (KW, PLAIN); PLAIN defaults to :func:`plain_twin`."""
    if ':' in text:
        kw, plain = text.split(':', 1)
        return kw, plain
    return text, plain_twin(text)


def build_spec(spec: ModelSpec) -> nn.Module:
    """Build ``spec`` (seeded) with :func:`kw_mm.apis.build_model`."""
    torch.manual_seed(0)
    # KW layers initialize themselves when their warehouses are allocated; init_weights()
    # (which the Runner calls) changes nothing that matters for speed.
    return build_model(spec.cfg)


def calibrate_norms(model: nn.Module, inputs: torch.Tensor, steps: int = 2) -> None:
    """Give every BatchNorm the running statistics of ``inputs`` (as training would).

    A freshly built network keeps BatchNorm's default statistics (mean 0, variance 1), so in
    eval mode its activations are not normalized: they shrink or grow layer by layer, and deep
    in a KW network the attention logits, hence the kernels (the CAF divides logits by
    ``|z|_1 + 1e-3``), become tiny and the convolutions produce denormal floats, which x86
    CPUs process 5-10x slower (a depth-wise KW layer of MobileNetV2 took 12.4 ms instead of
    2.9 ms). A trained model has calibrated statistics; so do both contestants here: a few
    forward passes in train mode with a cumulative average (``momentum=None``), no gradients,
    parameters untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(inputs, mode='tensor')
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def is_kw_model(model: nn.Module) -> bool:
    return any(isinstance(m, KWConvNd) for m in model.modules())


def build_optimizer(model: nn.Module, spec: ModelSpec) -> torch.optim.Optimizer:
    """The config's optimizer (type and arguments; no param-wise options), else SGD."""
    cfg = (spec.optim_cfg or {}).get('optimizer') if spec.optim_cfg else None
    if cfg:
        cfg = dict(cfg)
        cfg.pop('_scope_', None)  # set by mmengine on configs inheriting toolbox bases
        kind = cfg.pop('type')
        optim_cls = getattr(torch.optim, kind, None)
        if optim_cls is not None:
            return optim_cls(model.parameters(), **cfg)
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


# ----------------------------------------------------------------------------------- timing
def clear_memory() -> None:
    gc.collect()


#: How the C allocator is set up for a run (see :func:`set_allocator`).
ALLOCATORS = ('warm', 'system')
_allocator = 'system'


def set_allocator(mode: str) -> str:
    """Choose the C allocator regime of this process: ``'warm'`` or ``'system'``.

    PyTorch's CPU tensors come from ``malloc``. glibc serves large blocks with fresh
    ``mmap`` pages and gives freed memory back, so a tensor of more than its (adaptive,
    at most 32 MB) threshold is page-faulted in again on every call, and how often that
    happens depends on what the process ran before: the plain MobileNetV2 took 170 ms at
    batch 8 as the first model of a process and 98 ms after the ResNets. ``'warm'`` keeps
    freed memory in the heap (``mallopt``: no ``mmap`` below 1 GB, no trimming), the steady
    state of a long-running job, so every contestant is measured alike whatever ran before.
    ``'system'`` leaves glibc's defaults. No-op (returns ``'system'``) without glibc. The
    kernel may still reclaim freed pages that stay idle (memory reclaim daemons); inside a
    timing loop they are reused at once.

    Returns:
        str: The regime in effect.
    """
    global _allocator
    if mode not in ALLOCATORS:
        raise ValueError(f'allocator must be one of {ALLOCATORS}, got {mode!r}')
    if mode == 'warm' and _allocator != 'warm':
        import ctypes
        import ctypes.util
        try:
            libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return _allocator
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        if mallopt(m_mmap_threshold, 2**30) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1:
            _allocator = 'warm'
    return _allocator


#: Clocks: wall time, or the CPU time of this process (all its threads), which a busy
#: machine disturbs less (with more than one thread it also counts the threads' spin-waits).
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}
_clock = time.perf_counter


def set_clock(name: str) -> None:
    """Time with ``'wall'`` (default) or ``'cpu'`` (process CPU time)."""
    global _clock
    if name not in CLOCKS:
        raise ValueError(f'clock must be one of {sorted(CLOCKS)}, got {name!r}')
    _clock = CLOCKS[name]


def interleaved_times(fns: Dict[str, Callable[[], None]], reps: int,
                      warmup: int) -> Dict[str, List[float]]:
    """Seconds per call of every function, round robin: ``reps`` rounds after ``warmup``."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = _clock()
            fn()
            times[name].append(_clock() - start)
    return times


def ratio_stats(times: Dict[str, List[float]], num: str, den: str) -> float:
    """Median over rounds of ``times[num][r] / times[den][r]``."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def peak_memory(fn: Callable[[], None], device: torch.device) -> int:
    """Peak tensor memory (bytes) allocated by ``fn`` above what was allocated before it."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'
              and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


# ----------------------------------------------------------------------------------- steps
def _data_samples(batch: int, num_classes: int = 1000) -> list:
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % num_classes) for i in range(batch)]


class Contestant:
    """One model (or one implementation of a KW model) with its eval and train steps."""

    def __init__(self, name: str, model: nn.Module, spec: ModelSpec, impl: str = 'fast',
                 device: str = 'cpu') -> None:
        self.name = name
        self.model = model.to(device)
        self.spec = spec
        self.impl = impl
        self.device = torch.device(device)
        self.optimizer = build_optimizer(self.model, spec)

    def _ctx(self):
        return use_kw_impl(self.impl) if is_kw_model(self.model) else nullcontext()

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def eval_fn(self, inputs: torch.Tensor) -> Callable[[], None]:
        model = self.model

        def step() -> None:
            model.eval()
            with torch.inference_mode(), self._ctx():
                model(inputs, mode='tensor')
            self._sync()
        return step

    def train_fn(self, inputs: torch.Tensor) -> Callable[[], None]:
        model, optimizer = self.model, self.optimizer
        samples = _data_samples(inputs.shape[0])

        def step() -> None:
            model.train()
            with self._ctx():
                optimizer.zero_grad(set_to_none=True)
                losses = model(inputs, samples, mode='loss')
                loss = sum(v for k, v in losses.items() if 'loss' in k)
                loss.backward()
                optimizer.step()
            self._sync()
        return step


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
                   warmup: int = 2, metrics: Sequence[str] = ('eval_b1', 'eval_bN', 'train'),
                   with_reference: bool = False, memory: bool = True, flops: bool = True,
                   device: str = 'cpu', log: Callable[[str], None] = print) -> PairResult:
    """Benchmark a KW model against its plain twin (interleaved; see the module docstring).

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
    unknown = set(metrics) - {'eval_b1', 'eval_bN', 'train'}
    if unknown:
        raise ValueError(f'unknown metrics {sorted(unknown)}; choose from eval_b1, eval_bN, train')
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
    contestants = [Contestant(kw_spec.name, kw_model, kw_spec, 'fast', device),
                   Contestant(plain_spec.name, plain_model, plain_spec, 'fast', device)]
    reference = Contestant(kw_spec.name + ' (reference)', kw_model, kw_spec, 'reference', device)
    reference.optimizer = contestants[0].optimizer
    if with_reference:
        contestants.append(reference)
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, 3, size, size, generator=gen).to(device) for b in (1, batch)}
    for c in contestants[:2]:  # the reference contestant shares the KW model
        calibrate_norms(c.model, inputs[batch])
    for metric in metrics:
        b = 1 if metric == 'eval_b1' else batch
        make = 'train_fn' if metric == 'train' else 'eval_fn'
        fns = {c.name: getattr(c, make)(inputs[b]) for c in contestants}
        log(f'  {metric}: {len(fns)} contestants x {reps} rounds')
        times = interleaved_times(fns, reps, warmup)
        result.raw_ms[metric] = {k: [t * 1e3 for t in v] for k, v in times.items()}
        result.times_ms[metric] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        result.ratios[metric] = {c.name: ratio_stats(times, c.name, plain_spec.name)
                                 for c in contestants if c.name != plain_spec.name}
    if memory:
        dev = torch.device(device)
        for metric, make in (('train', 'train_fn'), ('eval_bN', 'eval_fn')):
            result.memory_mb[metric] = {}
            for c in contestants[:2] + [reference]:
                fn = getattr(c, make)(inputs[batch])
                fn()  # warm (optimizer state exists, caches filled)
                # Free the gradients outside the profiled step: the profiler cannot see the
                # release of memory allocated before it started.
                c.optimizer.zero_grad(set_to_none=True)
                clear_memory()
                result.memory_mb[metric][c.name] = peak_memory(fn, dev) / 2**20
    return result


# ----------------------------------------------------------------------------------- layers
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
            with use_kw_impl(impl):
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
        fns = {'kw': run(layer, 'fast', train), 'kw reference': run(layer, 'reference', train),
               'conv': run(plain, 'fast', train)}
        times = interleaved_times(fns, reps, warmup)
        row['times_ms'][mode] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        row['ratios'][mode] = {k: ratio_stats(times, k, 'conv') for k in ('kw', 'kw reference')}
        if train:
            for name, fn in fns.items():
                clear_memory()
                row['memory_mb'][name] = peak_memory(fn, torch.device('cpu')) / 2**20
    return row


# ----------------------------------------------------------------------------------- output
def environment() -> dict:
    """What the numbers depend on: torch, threads, CPU, load."""
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = None
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_model(),
                cpu_count=os.cpu_count(), loadavg=load, python=platform.python_version(),
                allocator=_allocator)


def _ratio_cell(ratio: Optional[float], target: Optional[float] = None) -> str:
    if ratio is None:
        return '-'
    text = f'{ratio:.2f}x'
    if target is not None:
        text += ' (target <= {:g}x: {})'.format(target, 'met' if ratio <= target else 'missed')
    return text


def format_pairs(results: Sequence[PairResult], batch: int) -> str:
    """A markdown table: per model its times, KW/plain ratios (with the issue's targets where
    they apply) and the peak memory of a training step."""
    header = ['Model', 'Params', 'FLOPs (KW/plain)', 'Eval b1 ms', 'Eval b1 KW/plain', f'Eval b{batch} ms',
              f'Eval b{batch} KW/plain', f'img/s b{batch}', f'Train b{batch} ms',
              'Train KW/plain', 'Train peak MB', 'Peak KW/plain', 'Peak KW/reference']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in results:
        targets = TARGETS.get(r.kw, {}) if batch == 8 else {}
        ref = r.kw + ' (reference)'
        timed_ref = any(ref in times for times in r.times_ms.values())
        names = [r.kw] + ([ref] if timed_ref else []) + [r.plain]
        mem = r.memory_mb.get('train', {})
        for name in names:
            is_kw, is_plain = name == r.kw, name == r.plain
            cells = [name.replace(' (reference)', ' (straightforward impl.)'),
                     f'{r.params[r.kw if name == ref else name] / 1e6:.2f}M']
            f = r.flops.get(r.kw if name == ref else name, {}).get('flops')
            plain_f = r.flops.get(r.plain, {}).get('flops')
            cells.append('-' if f is None else f'{f / 1e9:.2f}G' + (
                f' ({f / plain_f:.2f}x)' if plain_f and not is_plain else ''))
            for metric, key in (('eval_b1', 'eval_b1'), ('eval_bN', 'eval_b8'),
                                ('train', 'train')):
                t = r.times_ms.get(metric, {}).get(name)
                cells.append('-' if t is None else f'{t:.1f}')
                ratio = None if is_plain else r.ratios.get(metric, {}).get(name)
                cells.append('1.00x' if is_plain and t is not None else
                             _ratio_cell(ratio, targets.get(key) if is_kw else None))
                if metric == 'eval_bN':
                    cells.append('-' if t is None else f'{batch / t * 1e3:.1f}')
            m = mem.get(name)
            cells.append('-' if m is None else f'{m:.0f}')
            cells.append('-' if m is None or r.plain not in mem else f'{m / mem[r.plain]:.2f}x')
            cells.append(f'{m / mem[ref]:.2f}x' if is_kw and m is not None and ref in mem
                         else '-')
            lines.append('| ' + ' | '.join(cells) + ' |')
        if ref in mem and ref not in names:
            lines.append(f'| {r.kw} (straightforward impl.) |' + ' |' * 9 +
                         f' {mem[ref]:.0f} | {mem[ref] / mem[r.plain]:.2f}x | 1.00x |')
    return '\n'.join(lines)


def format_layer_rows(rows: Sequence[dict]) -> str:
    lines = ['| Layer | M | n | Eval ms KW / ref / conv | Eval KW/conv | Eval ref/conv | '
             'Train ms KW / ref / conv | Train KW/conv | Train ref/conv | Train mem MB KW / ref '
             '/ conv |', '|' + '---|' * 10]
    for r in rows:
        e, t = r['times_ms']['eval'], r['times_ms']['train']
        m = r['memory_mb']
        lines.append(
            f"| {r['layer']} (B={r['batch']}) | {r['num_mixtures']} | {r['num_cells']} | "
            f"{e['kw']:.2f} / {e['kw reference']:.2f} / {e['conv']:.2f} | "
            f"{r['ratios']['eval']['kw']:.2f}x | {r['ratios']['eval']['kw reference']:.2f}x | "
            f"{t['kw']:.2f} / {t['kw reference']:.2f} / {t['conv']:.2f} | "
            f"{r['ratios']['train']['kw']:.2f}x | {r['ratios']['train']['kw reference']:.2f}x | "
            f"{m['kw']:.1f} / {m['kw reference']:.1f} / {m['conv']:.1f} |")
    return '\n'.join(lines)
