"""Compiled KW models against their compiled plain twins, beside both in PyTorch eager.

``tools/analysis/benchmark.py --compile``: both models of a pair run compiled by
``torch.compile`` (:class:`~.compiled.CompiledContestant`, inductor, one static graph per batch
size and mode) and eagerly (their usual fast KW paths), the four contestants **interleaved**
(:func:`~.benchmark.measure_contestants`: one round times each once, in turn), per metric
(eval at batch 1 and ``N``, a training step at ``N``); ratios are medians over rounds of the
per-round ratios. Reported per pair and metric:

* KW / plain compiled (what KW costs against a compiled plain model);
* KW / plain eager, for comparison;
* KW compiled / KW eager (whether compiling the KW model pays);
* the compile time of each compiled model (its first step of that metric: compilation plus
  one step), measured before any timing, and the parity of each compiled model with its eager
  self in evaluation (largest relative error of the outputs), so a fast graph that computes
  something else cannot pass unseen.

Before timing, both models get calibrated BatchNorm statistics
(:func:`~.contestants.calibrate_norms`), as in every benchmark of kw_mm.
"""
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch._dynamo

from kw_mm.deployment.onnx_export import relative_error
from .benchmark import METRICS, build_pair, check_metrics, measure_contestants
from .compiled import CompiledContestant
from .contestants import Contestant
from .measure import ratio_stats
from .op_profile import format_op_profile, torch_op_profile
from .report import target_cell, target_lines

#: The contestants of a pair, in the order they run in a round.
CONTESTANTS = ('KW compiled', 'plain compiled', 'KW eager', 'plain eager')
#: Ratio name -> (numerator, denominator) contestants.
RATIOS = {'compiled': ('KW compiled', 'plain compiled'), 'eager': ('KW eager', 'plain eager'),
          'compiled_vs_eager': ('KW compiled', 'KW eager'),
          'plain_compiled_vs_eager': ('plain compiled', 'plain eager')}
#: The ratios a target can bound: KW / plain compiled, and KW compiled / KW eager.
TARGET_RATIOS = ('compiled', 'compiled_vs_eager')
#: How the report names the ratios.
RATIO_NAMES = {'compiled': 'compiled KW/plain', 'eager': 'eager KW/plain',
               'compiled_vs_eager': 'KW compiled/eager',
               'plain_compiled_vs_eager': 'plain compiled/eager'}


def metric_key(metric: str, batch: int) -> str:
    """The name a metric has in a table and in the targets: ``'eval_b1'``, ``'eval_b8'`` (at
    ``batch`` 8), ``'train'``."""
    return metric.replace('bN', f'b{batch}')


@dataclass
class CompiledPairResult:
    """Compiled and eager times of a KW model and its plain twin."""

    kw: str
    plain: str
    batch: int
    backend: str
    times_ms: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> name -> ms
    ratios: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> ratio -> x
    compile_s: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> name -> s
    parity: Dict[str, Dict[int, float]] = field(default_factory=dict)  # role -> batch -> err
    raw_ms: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    #: metric -> 'KW' / 'plain' -> the operations taking most of the compiled step's time
    profiles: Dict[str, Dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _parity(compiled: CompiledContestant, inputs: Mapping[int, torch.Tensor]) -> Dict[int, float]:
    """The compiled model's eval outputs against its eager model's, per batch size."""
    model = compiled.model.eval()
    errors = {}
    with torch.inference_mode():
        for b, x in inputs.items():
            errors[b] = relative_error(compiled.compiled(x, mode='tensor'),
                                       model(x, mode='tensor'))
    return errors


def benchmark_compiled_pair(kw: str, plain: str, batch: int = 8, size: int = 224,
                            reps: int = 10, warmup: int = 2,
                            metrics: Sequence[str] = METRICS, backend: str = 'inductor',
                            device: str = 'cpu',
                            log: Callable[[str], None] = print) -> CompiledPairResult:
    """Time a KW model and its plain twin, both compiled and eager, interleaved.

    Args:
        kw (str): KW config path or paper variant name.
        plain (str): The plain twin (config path or variant name).
        batch (int): ``N`` of the batch-N eval and of the training step. Defaults to 8.
        size (int): Input resolution. Defaults to 224.
        reps (int): Timed rounds per metric. Defaults to 10.
        warmup (int): Untimed rounds per metric after the compiling call. Defaults to 2.
        metrics (sequence[str]): Any of ``'eval_b1'``, ``'eval_bN'``, ``'train'``.
        backend (str): The ``torch.compile`` backend. Defaults to ``'inductor'``.
        device (str): Defaults to ``'cpu'``.
    """
    check_metrics(metrics)
    # Graphs compiled for earlier models count against Dynamo's recompilation limit of the
    # code they share (the classifier's forward): start each pair from none.
    torch._dynamo.reset()
    inputs, built = build_pair(kw, plain, batch, size, device)
    contestants: Dict[str, Contestant] = {}
    for role, (spec, model) in built.items():
        compiled = CompiledContestant(f'{role} compiled', model, spec, device=device,
                                      backend=backend)
        eager = Contestant(f'{role} eager', model, spec, device=device)
        eager.optimizer = compiled.optimizer  # the same model: one optimizer state
        contestants[compiled.name], contestants[eager.name] = compiled, eager
    result = CompiledPairResult(built['KW'][0].name, built['plain'][0].name, batch, backend)
    for metric in metrics:
        result.compile_s[metric] = {}
        for name in ('KW compiled', 'plain compiled'):
            c = contestants[name]
            seconds = c.warm(metric, c.metric_fn(metric, inputs, batch))
            result.compile_s[metric][name] = seconds
            log(f'  {name} {metric}: compiled in {seconds:.1f} s')
    result.parity = {role: _parity(contestants[f'{role} compiled'], inputs)
                     for role in ('KW', 'plain')}
    measured = measure_contestants([contestants[n] for n in CONTESTANTS], 'plain compiled',
                                   inputs, batch, metrics, reps, warmup, log=log)
    result.times_ms, result.raw_ms = measured.times_ms, measured.raw_ms
    result.ratios = {metric: {name: ratio_stats(raw, num, den)
                              for name, (num, den) in RATIOS.items()}
                     for metric, raw in measured.raw_ms.items()}
    for metric in metrics:
        result.profiles[metric] = {
            role: format_op_profile(torch_op_profile(
                contestants[f'{role} compiled'].metric_fn(metric, inputs, batch)))
            for role in ('KW', 'plain')}
    torch._dynamo.reset()  # the compiled graphs of this pair are not needed again
    return result


def run_compiled_session(pairs: Sequence, threads: int, batch: int = 8, size: int = 224,
                         reps: int = 10, warmup: int = 2, metrics: Sequence[str] = METRICS,
                         backend: str = 'inductor',
                         log: Callable[[str], None] = print) -> dict:
    """:func:`benchmark_compiled_pair` for every (KW, plain) pair at ``threads`` threads, with
    the machine they ran on (:func:`~kw_mm.analysis.machine_report.machine_report`)."""
    from .machine_report import run_pairs
    machine, results = run_pairs(
        pairs, threads,
        lambda kw, plain: (f'torch.compile ({backend}): {kw} vs {plain} (threads={threads}, '
                           f'batch={batch})'),
        lambda kw, plain: benchmark_compiled_pair(kw, plain, batch, size, reps, warmup,
                                                  metrics, backend, log=log), log)
    return dict(machine=machine, results=results, batch=batch, backend=backend)


# ----------------------------------------------------------------------------------- report
def format_compiled_results(results: Sequence[CompiledPairResult],
                            targets: Optional[Mapping[str, Mapping[str, Mapping[str, float]]]]
                            = None) -> str:
    """A markdown table: per pair and metric the four times, the ratios (with the ``targets``
    where they apply: KW model name -> :data:`TARGET_RATIOS` -> metric key such as
    ``'eval_b8'`` -> largest ratio), the compile times and the parity of each compiled model
    with its eager self, then every target as met or MISSED."""
    header = ['Model', 'Metric', *(f'{c} ms' for c in CONTESTANTS), 'compiled KW/plain',
              'eager KW/plain', 'KW compiled/eager', 'compile s KW / plain',
              'parity KW / plain']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    report = []
    for r in results:
        goals = (targets or {}).get(r.kw, {})
        for metric, times in r.times_ms.items():
            key, q = metric_key(metric, r.batch), r.ratios[metric]
            bound = {name: goals.get(name, {}).get(key) for name in TARGET_RATIOS}
            compile_s = r.compile_s.get(metric, {})
            parity = ('-' if metric == 'train' else ' / '.join(
                f"{r.parity[role][1 if metric == 'eval_b1' else r.batch]:.1e}"
                for role in ('KW', 'plain')))
            lines.append('| ' + ' | '.join([
                f'{r.kw} vs {r.plain}', key, *(f'{times[c]:.1f}' for c in CONTESTANTS),
                target_cell(q['compiled'], bound['compiled']), f"{q['eager']:.2f}x",
                target_cell(q['compiled_vs_eager'], bound['compiled_vs_eager']),
                ' / '.join(f"{compile_s.get(f'{role} compiled', float('nan')):.0f}"
                           for role in ('KW', 'plain')), parity]) + ' |')
            for name in TARGET_RATIOS:
                if bound[name] is not None:
                    report += target_lines(f'{r.kw} {key} {RATIO_NAMES[name]}', q[name],
                                           bound[name], 'compiled step, share of self CPU time',
                                           r.profiles.get(metric))
    text = '\n'.join(lines)
    if report:
        text += '\n\nTargets:\n' + '\n'.join(report)
    return text


def format_compiled_session(session: dict,
                            targets: Optional[Mapping[str, Mapping[str, Mapping[str, float]]]]
                            = None) -> str:
    """The machine header, the compiler's settings and the table."""
    return '\n'.join([
        session['machine'].header(),
        f"torch {torch.__version__}, torch.compile backend {session['backend']} (static shapes: "
        'one graph per batch size and mode); compile s = the first step of that metric '
        '(compilation + one step), measured before the timed rounds', '',
        format_compiled_results(session['results'], targets)])


def compiled_session_to_dict(session: dict) -> dict:
    return dict(machine=session['machine'].to_dict(), batch=session['batch'],
                backend=session['backend'],
                compiled_results=[r.to_dict() for r in session['results']])
