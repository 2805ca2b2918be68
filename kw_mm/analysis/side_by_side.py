"""Side by side: any set of plain, DY-Conv, ODConv, CondConv, KW and KW* models in one
interleaved run (the KW paper's Tables 12 and 16, measured on the machine at hand).

Every contestant is timed once per round, in turn (:func:`~.benchmark.interleaved_times`), so a
slow phase of a shared machine hits all of them alike; ratios to the plain model are medians of
per-round ratios. Measured: eval latency at batch 1 and ``N``, a training step at batch ``N``
(forward with the loss, backward, the config's optimizer), and the peak tensor memory of a
training step and of an eval pass at batch ``N`` (:func:`~.benchmark.peak_memory`). Both
BatchNorm statistics and allocator are prepared as for the KW pairs (``benchmark.py``).
"""
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import torch

from .benchmark import (Contestant, build_spec, calibrate_norms, clear_memory,
                        interleaved_times, load_spec, peak_memory, ratio_stats)
from .flops import count_params

#: The paper's side-by-side sets (Tables 12 and 16): the plain model first.
SIDE_BY_SIDE_PRESETS: Dict[str, List[str]] = {
    'rivals-resnet50': [
        'configs/resnet50_8xb512-300e_in1k.py',
        'configs/dyconv4x-resnet50_8xb512-300e_in1k.py',
        'configs/odconv4x-resnet50_8xb512-300e_in1k.py',
        'configs/kw1d2x-resnet50_8xb512-300e_in1k.py',
        'configs/kw1x-resnet50_8xb512-300e_in1k.py',
        'configs/kw4x-resnet50_8xb512-300e_in1k.py',
    ],
    'rivals-mobilenet-v2': [
        'configs/mobilenet-v2_8xb32-150e_in1k.py',
        'configs/dyconv4x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/odconv4x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/kw1d2x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/kw4x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/kwstar4x-mobilenet-v2_8xb32-150e_in1k.py',
    ],
    'rivals-resnet18': [
        'configs/resnet18_8xb32_in1k.py',
        'configs/condconv8x-resnet18_8xb32_in1k.py',
        'configs/dyconv4x-resnet18_8xb32_in1k.py',
        'configs/odconv4x-resnet18_8xb32_in1k.py',
        'configs/kw1x-resnet18_8xb32_in1k.py',
        'configs/kw4x-resnet18_8xb32_in1k.py',
    ],
}
METRICS = ('eval_b1', 'eval_bN', 'train')


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


def benchmark_side_by_side(models: Sequence[str], batch: int = 8, size: int = 224,
                           reps: int = 10, warmup: int = 2, metrics: Sequence[str] = METRICS,
                           memory: bool = True, device: str = 'cpu',
                           log: Callable[[str], None] = print) -> SideBySideResult:
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
    """
    if len(models) < 2:
        raise ValueError(f'side by side needs a plain model and at least one other, got '
                         f'{list(models)}')
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f'unknown metrics {sorted(unknown)}; choose from {list(METRICS)}')
    specs = [load_spec(m) for m in models]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f'models must differ, got {names}')
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, 3, size, size, generator=gen).to(device) for b in (1, batch)}
    contestants = []
    for spec in specs:
        model = build_spec(spec)
        calibrate_norms(model, inputs[batch])
        contestants.append(Contestant(spec.name, model, spec, 'fast', device))
    result = SideBySideResult(names[0], names, batch,
                              params={c.name: count_params(c.model)['params']
                                      for c in contestants})
    for metric in metrics:
        b = 1 if metric == 'eval_b1' else batch
        make = 'train_fn' if metric == 'train' else 'eval_fn'
        log(f'  {metric}: {len(contestants)} models x {reps} rounds')
        times = interleaved_times({c.name: getattr(c, make)(inputs[b]) for c in contestants},
                                  reps, warmup)
        result.times_ms[metric] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        result.ratios[metric] = {k: ratio_stats(times, k, names[0]) for k in names}
    if memory:
        for kind, make in (('train', 'train_fn'), ('eval', 'eval_fn')):
            result.memory_mb[kind] = {}
            for c in contestants:
                fn = getattr(c, make)(inputs[batch])
                fn()  # warm: optimizer state exists, caches filled
                c.optimizer.zero_grad(set_to_none=True)  # freed outside the profiled step
                clear_memory()
                result.memory_mb[kind][c.name] = peak_memory(fn, torch.device(device)) / 2**20
    return result


def format_side_by_side(result: SideBySideResult) -> str:
    """A markdown table: params, times and ratios to the plain model, peak memory."""
    n = result.batch
    header = ['Model', 'Params', 'Eval b1 ms', 'x plain', f'Eval b{n} ms', 'x plain',
              f'Train b{n} ms', 'x plain', f'Train peak MB (b{n})', 'x plain',
              f'Eval peak MB (b{n})', 'x plain']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for name in result.names:
        cells = [name, f'{result.params[name] / 1e6:.2f}M']
        for metric in METRICS:
            t = result.times_ms.get(metric, {}).get(name)
            ratio = result.ratios.get(metric, {}).get(name)
            cells += ['-' if t is None else f'{t:.1f}', '-' if ratio is None else f'{ratio:.2f}x']
        for kind in ('train', 'eval'):
            mem = result.memory_mb.get(kind, {})
            m, base = mem.get(name), mem.get(result.plain)
            cells += ['-' if m is None else f'{m:.0f}',
                      '-' if m is None or not base else f'{m / base:.2f}x']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)
