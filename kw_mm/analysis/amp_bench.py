"""What mixed precision costs and gains for KW models: ``tools/analysis/benchmark.py --amp``.

Per pair (a KW model and its plain twin), five contestants run **interleaved**
(:func:`~.benchmark.measure_contestants`: one round times each once, in turn), per metric (a
training step at ``N`` by default; eval at batch 1 and ``N`` on request):

* ``KW AMP t=0.5``: the KW model under autocast while its temperature anneals (its layers
  assemble their kernels from split attentions, :func:`~kw_mm.cnn.precision.split_attentions`);
* ``KW AMP t=0``: under autocast after the anneal (the rest of a pretraining, all of a
  fine-tuning);
* ``plain AMP``, ``KW fp32`` (t = 0), ``plain fp32``.

Each KW contestant holds its own copy of the model (its own temperature and optimizer); every
model gets calibrated BatchNorm statistics first (:func:`~.contestants.calibrate_norms`).
Ratios are medians over rounds of the per-round ratios (:func:`~.measure.ratio_stats`):
KW / plain under AMP and in float32, the anneal's extra cost under AMP (t = 0.5 / t = 0), and
what AMP gains over float32 for each model (AMP / fp32). On a CPU, bfloat16's speed depends on
the instruction set (AVX512-BF16, AMX): the ratios price the split on this machine's kernels;
``make gpu-check`` is where a GPU's figures come from.
"""
import copy
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Sequence

import torch

from .amp import AmpContestant, amp_dtype
from .benchmark import build_pair, check_metrics, measure_contestants
from .contestants import Contestant
from .measure import ratio_stats

#: The contestants of a pair, in the order they run in a round.
CONTESTANTS = ('KW AMP t=0.5', 'KW AMP t=0', 'plain AMP', 'KW fp32', 'plain fp32')
#: Ratio name -> (numerator, denominator) contestants.
RATIOS = {'amp': ('KW AMP t=0', 'plain AMP'), 'fp32': ('KW fp32', 'plain fp32'),
          'anneal': ('KW AMP t=0.5', 'KW AMP t=0'),
          'kw_amp_vs_fp32': ('KW AMP t=0', 'KW fp32'),
          'plain_amp_vs_fp32': ('plain AMP', 'plain fp32')}
#: How the table names the ratios.
RATIO_NAMES = {'amp': 'AMP KW/plain', 'fp32': 'fp32 KW/plain',
               'anneal': 'KW AMP t=0.5 / t=0', 'kw_amp_vs_fp32': 'KW AMP/fp32',
               'plain_amp_vs_fp32': 'plain AMP/fp32'}


@dataclass
class AmpPairResult:
    """AMP and float32 times of a KW model and its plain twin."""

    kw: str
    plain: str
    batch: int
    dtype: str
    times_ms: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> name -> ms
    ratios: Dict[str, Dict[str, float]] = field(default_factory=dict)  # metric -> ratio -> x
    raw_ms: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def benchmark_amp_pair(kw: str, plain: str, batch: int = 8, size: int = 224, reps: int = 10,
                       warmup: int = 2, metrics: Sequence[str] = ('train', ),
                       dtype: str = 'bfloat16', device: str = 'cpu',
                       log: Callable[[str], None] = print) -> AmpPairResult:
    """Time a KW model and its plain twin under autocast and in float32, interleaved.

    Args:
        kw (str): KW config path or paper variant name.
        plain (str): The plain twin (config path or variant name).
        batch (int): ``N`` of the training step and of the batch-N eval. Defaults to 8.
        size (int): Input resolution. Defaults to 224.
        reps (int): Timed rounds per metric. Defaults to 10.
        warmup (int): Untimed rounds first. Defaults to 2.
        metrics (sequence[str]): Any of ``'eval_b1'``, ``'eval_bN'``, ``'train'``. Defaults to
            the training step.
        dtype (str): The autocast dtype, a key of :data:`~.amp.AMP_DTYPES`. Defaults to
            ``'bfloat16'``.
        device (str): Defaults to ``'cpu'``.
    """
    check_metrics(metrics)
    cast = amp_dtype(dtype)
    inputs, built = build_pair(kw, plain, batch, size, device)
    contestants: Dict[str, Contestant] = {}
    for role, (spec, model) in built.items():
        if role == 'KW':
            for t in (0.5, 0.0):
                name = f'KW AMP t={t:g}'
                contestants[name] = AmpContestant(name, copy.deepcopy(model), spec,
                                                  device=device, dtype=cast, temperature=t)
        else:
            contestants['plain AMP'] = AmpContestant('plain AMP', copy.deepcopy(model), spec,
                                                     device=device, dtype=cast)
        contestants[f'{role} fp32'] = Contestant(f'{role} fp32', model, spec, device=device)
    measured = measure_contestants([contestants[n] for n in CONTESTANTS], 'plain fp32', inputs,
                                   batch, metrics, reps, warmup, log=log)
    result = AmpPairResult(built['KW'][0].name, built['plain'][0].name, batch,
                           str(cast).split('.')[-1])
    result.times_ms, result.raw_ms = measured.times_ms, measured.raw_ms
    result.ratios = {metric: {name: ratio_stats(raw, num, den)
                              for name, (num, den) in RATIOS.items()}
                     for metric, raw in measured.raw_ms.items()}
    return result


def run_amp_session(pairs: Sequence, threads: int, batch: int = 8, size: int = 224,
                    reps: int = 10, warmup: int = 2, metrics: Sequence[str] = ('train', ),
                    dtype: str = 'bfloat16', log: Callable[[str], None] = print) -> dict:
    """:func:`benchmark_amp_pair` for every (KW, plain) pair at ``threads`` threads, with the
    machine they ran on (:func:`~kw_mm.analysis.machine_report.machine_report`)."""
    from .machine_report import run_pairs
    machine, results = run_pairs(
        pairs, threads,
        lambda kw, plain: f'AMP ({dtype}): {kw} vs {plain} (threads={threads}, batch={batch})',
        lambda kw, plain: benchmark_amp_pair(kw, plain, batch, size, reps, warmup, metrics,
                                             dtype, log=log), log)
    return dict(machine=machine, results=results, batch=batch, dtype=dtype)


def format_amp_results(results: Sequence[AmpPairResult]) -> str:
    """A markdown table: per pair and metric the five times and the ratios."""
    header = ['Model', 'Metric', *(f'{c} ms' for c in CONTESTANTS), *RATIO_NAMES.values()]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in results:
        for metric, times in r.times_ms.items():
            q = r.ratios[metric]
            lines.append('| ' + ' | '.join([
                f'{r.kw} vs {r.plain}', metric.replace('bN', f'b{r.batch}'),
                *(f'{times[c]:.1f}' for c in CONTESTANTS),
                *(f'{q[name]:.2f}x' for name in RATIO_NAMES)]) + ' |')
    return '\n'.join(lines)


def format_amp_session(session: dict) -> str:
    """The machine header, the autocast settings and the table."""
    return '\n'.join([
        session['machine'].header(),
        f"torch {torch.__version__}, autocast {session['dtype']} (parameters and optimizer in "
        'float32; KW attentions in float32; t = 0.5: split attentions)', '',
        format_amp_results(session['results'])])


def amp_session_to_dict(session: dict) -> dict:
    return dict(machine=session['machine'].to_dict(), batch=session['batch'],
                dtype=session['dtype'], amp_results=[r.to_dict() for r in session['results']])
