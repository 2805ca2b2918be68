"""Exported KW models against their exported plain twins in ONNX Runtime, beside PyTorch eager.

Both models of a pair are exported the way users export them (``kw_mm.deployment.export_onnx``,
the classifier with a symbolic batch, one file per model) and run with onnxruntime's CPU
provider at the benchmark's thread count; the same models run in PyTorch eager (their usual
fast KW paths) in the same rounds. All four contestants are timed **interleaved** (one round
times each once, in turn), at batch 1 and at batch ``N``; ratios are medians over rounds of the
per-round ratios. Reported per pair and batch:

* KW / plain in ONNX Runtime (the deployment cost of KW);
* KW in ONNX Runtime / KW in PyTorch eager (whether deploying the KW model costs speed);
* KW / plain in PyTorch eager, for comparison;
* the parity of each exported file with its PyTorch model (largest relative error over the
  outputs at batch 1 and ``N``), so a fast graph that computes something else cannot pass.

Before exporting, both models get calibrated BatchNorm statistics (as in
:mod:`kw_mm.analysis.benchmark`); the KW model's attentions are left as built (random, so its
parity reflects how much a random KW network amplifies float32 rounding; the deployment tests
check the parity on well-conditioned models).
"""
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from kw_mm.deployment.onnx_export import (ExportTarget, export_onnx, relative_error,
                                          require)
from .contestants import build_spec, calibrate_norms, is_kw_model, load_spec
from .measure import interleaved_times, ratio_stats
from .op_profile import format_op_profile, ort_op_profile
from .report import target_cell, target_lines

#: ONNX Runtime's graph optimization levels by the names the command line takes.
OPTIMIZATION_LEVELS = ('disable', 'basic', 'extended', 'all')

#: The target keys: ``ort`` bounds KW / plain in ONNX Runtime, ``ort_vs_eager`` the KW model's
#: ONNX Runtime time over its PyTorch eager time, both at batch 1 and ``N``.
TARGET_KEYS = ('ort', 'ort_vs_eager')


def ort_session(path: str, threads: int, optimization: str = 'all',
                profile_prefix: Optional[str] = None):
    """An onnxruntime CPU session on ``path`` with ``threads`` intra-op threads (one inter-op
    thread, sequential execution: the contestants share the cores as PyTorch's do).

    Args:
        path (str): The ``.onnx`` file.
        threads (int): Intra-op threads.
        optimization (str): One of :data:`OPTIMIZATION_LEVELS`. Defaults to ``'all'``.
        profile_prefix (str, optional): Profile every run (onnxruntime's profiler) into a
            JSON file starting with this path. Defaults to no profiling.
    """
    ort = require('onnxruntime', 'Timing the exported model')
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f'optimization must be one of {list(OPTIMIZATION_LEVELS)}, got '
                         f'{optimization!r}')
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle onnxruntime threads would spin between runs and steal the cores from the contestant
    # that runs next (PyTorch, or another session): a 2-core machine ran 10x slower.
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.graph_optimization_level = {
        'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def ort_fn(session, inputs: torch.Tensor) -> Callable[[], List]:
    """One forward pass of ``session`` on ``inputs`` (converted once, outside the timing)."""
    name = session.get_inputs()[0].name
    feed = {name: inputs.numpy()}
    return lambda: session.run(None, feed)


def eager_fn(model: torch.nn.Module, inputs: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One forward pass of an mmpretrain classifier in PyTorch eager (its usual KW paths)."""
    def step() -> torch.Tensor:
        with torch.inference_mode():
            return model(inputs, mode='tensor')
    return step


@dataclass
class OnnxPairResult:
    """ONNX Runtime and PyTorch eager times of a KW model and its plain twin."""

    kw: str
    plain: str
    batch: int
    optimization: str
    times_ms: Dict[str, Dict[str, float]] = field(default_factory=dict)  # b1/bN -> name -> ms
    ratios: Dict[str, Dict[str, float]] = field(default_factory=dict)  # b1/bN -> ratio -> x
    parity: Dict[str, Dict[int, float]] = field(default_factory=dict)  # model -> batch -> err
    file_mb: Dict[str, float] = field(default_factory=dict)
    raw_ms: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    #: b1/bN -> 'KW' / 'plain' -> the operator types taking most of the ORT time
    profiles: Dict[str, Dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


#: The contestants of a pair, in the order they run in a round.
CONTESTANTS = ('KW ORT', 'plain ORT', 'KW eager', 'plain eager')
#: Ratio name -> (numerator, denominator) contestants.
RATIOS = {'ort': ('KW ORT', 'plain ORT'), 'ort_vs_eager': ('KW ORT', 'KW eager'),
          'eager': ('KW eager', 'plain eager'), 'plain_ort_vs_eager': ('plain ORT', 'plain eager')}
#: How the target report names the ratios.
RATIO_NAMES = {'ort': 'ORT KW/plain', 'ort_vs_eager': 'KW ORT/eager'}


def benchmark_onnx_pair(kw: str, plain: str, batch: int = 8, size: int = 224, reps: int = 10,
                        warmup: int = 2, threads: Optional[int] = None,
                        optimization: str = 'all', workdir: Optional[str] = None,
                        log: Callable[[str], None] = print) -> OnnxPairResult:
    """Export a KW model and its plain twin and time both in onnxruntime and PyTorch eager.

    Args:
        kw (str): KW config path or paper variant name.
        plain (str): The plain twin (config path or variant name).
        batch (int): ``N`` of the batch-N eval. Defaults to 8.
        size (int): Input resolution. Defaults to 224.
        reps (int): Timed rounds per batch size. Defaults to 10.
        warmup (int): Untimed rounds first. Defaults to 2.
        threads (int, optional): onnxruntime intra-op threads; defaults to PyTorch's count.
        optimization (str): onnxruntime's graph optimization level, one of
            :data:`OPTIMIZATION_LEVELS`. Defaults to ``'all'``.
        workdir (str, optional): Where the ``.onnx`` files are written (kept); defaults to a
            temporary directory removed afterwards.
    """
    threads = threads or torch.get_num_threads()
    kw_spec, plain_spec = load_spec(kw), load_spec(plain)
    models = {'KW': build_spec(kw_spec), 'plain': build_spec(plain_spec)}
    if not is_kw_model(models['KW']):
        raise ValueError(f'{kw!r} has no KernelWarehouse layer')
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(b, 3, size, size, generator=gen) for b in (1, batch)}
    for model in models.values():
        calibrate_norms(model, inputs[batch])
        model.eval()
    result = OnnxPairResult(kw_spec.name, plain_spec.name, batch, optimization)
    with tempfile.TemporaryDirectory() as tmp:
        folder = workdir or tmp
        os.makedirs(folder, exist_ok=True)
        sessions = {}
        for role, spec in (('KW', kw_spec), ('plain', plain_spec)):
            path = os.path.join(folder, f'{spec.name}.onnx')
            log(f'  exporting {spec.name} -> {path}')
            target = ExportTarget(models[role], 'mmpretrain')
            export_onnx(target, path, (3, size, size), dynamic_batch=True)
            result.file_mb[spec.name] = os.path.getsize(path) / 2**20
            sessions[role] = ort_session(path, threads, optimization)
            parity = {}
            for b, x in inputs.items():
                with torch.no_grad():
                    expected = target(x)
                actual = torch.from_numpy(ort_fn(sessions[role], x)()[0])
                parity[b] = relative_error(actual, expected)
            result.parity[spec.name] = parity
        for key, b in (('b1', 1), ('bN', batch)):
            fns = {'KW ORT': ort_fn(sessions['KW'], inputs[b]),
                   'plain ORT': ort_fn(sessions['plain'], inputs[b]),
                   'KW eager': eager_fn(models['KW'], inputs[b]),
                   'plain eager': eager_fn(models['plain'], inputs[b])}
            log(f'  batch {b}: {len(fns)} contestants x {reps} rounds')
            times = interleaved_times(fns, reps, warmup)
            result.raw_ms[key] = {k: [t * 1e3 for t in v] for k, v in times.items()}
            result.times_ms[key] = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            result.ratios[key] = {name: ratio_stats(times, num, den)
                                  for name, (num, den) in RATIOS.items()}
            result.profiles[key] = {
                role: format_op_profile(ort_op_profile(
                    os.path.join(folder, f'{spec.name}.onnx'),
                    {sessions[role].get_inputs()[0].name: inputs[b].numpy()}, threads,
                    optimization))
                for role, spec in (('KW', kw_spec), ('plain', plain_spec))}
    return result


def run_onnx_session(pairs: Sequence, threads: int, batch: int = 8, size: int = 224,
                     reps: int = 10, warmup: int = 2, optimization: str = 'all',
                     workdir: Optional[str] = None,
                     log: Callable[[str], None] = print) -> dict:
    """:func:`benchmark_onnx_pair` for every (KW, plain) pair at ``threads`` threads, with the
    machine they ran on (:func:`~kw_mm.analysis.machine.machine_report`)."""
    from .machine_report import run_pairs
    machine, results = run_pairs(
        pairs, threads,
        lambda kw, plain: (f'ONNX Runtime: {kw} vs {plain} (threads={threads}, batch={batch}, '
                           f'optimization={optimization})'),
        lambda kw, plain: benchmark_onnx_pair(kw, plain, batch, size, reps, warmup, threads,
                                              optimization, workdir, log), log)
    return dict(machine=machine, results=results, batch=batch, optimization=optimization)


def format_onnx_results(results: Sequence[OnnxPairResult],
                        targets: Optional[Dict[str, Dict[str, float]]] = None) -> str:
    """A markdown table: per pair and batch size the four times and the ratios, with the
    ``targets`` (KW model name -> :data:`TARGET_KEYS` -> largest ratio) where they apply, and
    the files' parity (largest relative error against PyTorch)."""
    header = ['Model', 'Batch', 'KW ORT ms', 'plain ORT ms', 'KW eager ms', 'plain eager ms',
              'ORT KW/plain', 'KW ORT/eager', 'eager KW/plain', 'parity KW / plain']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    report = []
    for r in results:
        goals = (targets or {}).get(r.kw, {})
        for key, b in (('b1', 1), ('bN', r.batch)):
            t, q = r.times_ms[key], r.ratios[key]
            for name in TARGET_KEYS:
                if goals.get(name) is None:
                    continue
                report += target_lines(f'{r.kw} batch {b} {RATIO_NAMES[name]}', q[name],
                                       goals[name], 'ONNX Runtime operators, share of node time',
                                       r.profiles.get(key))
            parity = ' / '.join(f'{r.parity[name][b]:.1e}' for name in (r.kw, r.plain))
            lines.append('| ' + ' | '.join([
                f'{r.kw} vs {r.plain}', str(b), *(f'{t[c]:.1f}' for c in CONTESTANTS),
                target_cell(q['ort'], goals.get('ort')),
                target_cell(q['ort_vs_eager'], goals.get('ort_vs_eager')),
                f"{q['eager']:.2f}x", parity]) + ' |')
    text = '\n'.join(lines)
    if report:
        text += '\n\nTargets:\n' + '\n'.join(report)
    return text


def format_onnx_session(session: dict,
                        targets: Optional[Dict[str, Dict[str, float]]] = None) -> str:
    """The machine header, onnxruntime's version and settings, and the table."""
    ort = require('onnxruntime', 'Timing the exported model')
    onnx = require('onnx', 'Timing the exported model')
    return '\n'.join([
        session['machine'].header(),
        f"onnxruntime {ort.__version__} (CPUExecutionProvider, graph optimization "
        f"{session['optimization']}), onnx {onnx.__version__}, torch {torch.__version__}; "
        'exported with a symbolic batch (tools/deployment/export_onnx.py --dynamic-batch)',
        '', format_onnx_results(session['results'], targets)])


def onnx_session_to_dict(session: dict) -> dict:
    return dict(machine=session['machine'].to_dict(), batch=session['batch'],
                optimization=session['optimization'],
                onnx_results=[r.to_dict() for r in session['results']])
