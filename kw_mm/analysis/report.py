"""The benchmark's report: markdown tables of the measurements and limits, and the targets a run
is held to, each met or MISSED with the profile of a miss.

The targets are not part of the library: the tool that prints a report passes them
(:class:`Targets`; ``tools/analysis/benchmark_presets.py`` holds those of ``make bench``).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .benchmark import METRICS, PairResult, SideBySideResult
from .limit import TRAIN_FACTOR

#: Layers listed in the profile of a miss.
PROFILE_TOP = 4


@dataclass(frozen=True)
class Targets:
    """What a benchmark run is held to (KW time / plain time, same run), set by the tool.

    Attributes:
        models: KW model name -> metric key (``'eval_b1'``, ``'eval_b8'``, ``'train'``) ->
            the largest KW/plain allowed.
        layers: KW model name -> the largest KW/limit allowed for every one of its KW layers.
        load: The largest growth of KW/plain under a competing load (loaded / quiet).
        batch: The batch ``N`` the model targets are set for; runs at another batch are
            reported without them.
    """

    models: Dict[str, Dict[str, float]] = field(default_factory=dict)
    layers: Dict[str, float] = field(default_factory=dict)
    load: Optional[float] = None
    batch: int = 8

    def for_model(self, name: str, batch: int) -> Dict[str, float]:
        return self.models.get(name, {}) if batch == self.batch else {}


NO_TARGETS = Targets()


# ----------------------------------------------------------------------------------- pairs
def _ratio_cell(ratio: Optional[float], target: Optional[float] = None) -> str:
    return '-' if ratio is None else target_cell(ratio, target)


def format_pairs(results: Sequence[PairResult], batch: int,
                 targets: Targets = NO_TARGETS) -> str:
    """A markdown table: per model its times, KW/plain ratios (with the preset's targets where
    they apply) and the peak memory of a training step."""
    header = ['Model', 'Params', 'FLOPs (KW/plain)', 'Eval b1 ms', 'Eval b1 KW/plain',
              f'Eval b{batch} ms',
              f'Eval b{batch} KW/plain', f'img/s b{batch}', f'Train b{batch} ms',
              'Train KW/plain', 'Train peak MB', 'Peak KW/plain', 'Peak KW/reference']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in results:
        model_targets = targets.for_model(r.kw, batch)
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
                             _ratio_cell(ratio, model_targets.get(key) if is_kw else None))
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


# ----------------------------------------------------------------------------------- side by side
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


# ----------------------------------------------------------------------------------- limits
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
    ratio just above its target is printed with three decimals, never rounded onto the target)."""
    text = f'{value:.2f}'
    return f'{value:.3f}' if float(text) == target and value != target else text


def target_cell(ratio: float, target: Optional[float]) -> str:
    """A table cell ``<ratio>x``, with ``(target <= <bound>x: met)`` (or ``MISSED``) when a target
    applies."""
    text = f'{ratio:.2f}x'
    if target is not None:
        text += ' (target <= {:g}x: {})'.format(target, 'met' if ratio <= target else 'MISSED')
    return text


def target_line(label: str, value: float, target: float) -> str:
    """``- label: <ratio>x (target <= <bound>x): met`` (or ``MISSED``), one line of a target
    report."""
    return (f"- {label}: {_against(value, target)}x (target <= {target:g}x): "
            f"{'met' if value <= target else 'MISSED'}")


def target_lines(label: str, value: float, target: float, profile_kind: str,
                 profiles: Optional[Dict[str, str]]) -> List[str]:
    """:func:`target_line`, and under a miss the ``profiles`` of the models (role -> the
    operations taking most of the time), headed ``profile (<profile_kind>)``."""
    lines = [target_line(label, value, target)]
    if value > target and profiles:
        lines.append(f'  profile ({profile_kind}): '
                     + '; '.join(f'{role} {text}' for role, text in profiles.items()))
    return lines


def target_report(results: Sequence[PairResult], limits: Dict[str, dict], batch: int,
                  loads: Optional[Dict[str, Dict[str, float]]] = None,
                  targets: Targets = NO_TARGETS) -> str:
    """Every target in ``targets`` as met or missed; each miss with its profile.

    Args:
        results: The pair results.
        limits: ``name -> pair_limits(...)`` for those results.
        batch: The batch size N (model targets apply at ``targets.batch`` only).
        loads: ``name -> load_ratios(...)`` if measured under load.
        targets: What to hold the results to.
    """
    lines = []

    def add(label: str, value: float, target: float, profile: Optional[str]) -> None:
        lines.append(target_line(label, value, target))
        if value > target and profile:
            lines.append(f'  profile: {profile}')

    for r in results:
        lim = limits.get(r.kw, {})
        rows = lim.get('layers', [])
        profile = _layer_profile_text(rows) if rows else None
        model_targets = targets.for_model(r.kw, batch)
        for metric, key in TARGET_KEYS.items():
            ratio = r.ratios.get(metric, {}).get(r.kw)
            if key in model_targets and ratio is not None:
                m = lim.get('models', {}).get(metric)
                extra = (f"limit/plain {m['limit_over_plain']:.2f}x, KW/limit "
                         f"{m['kw_over_limit']:.2f}x; " if m else '')
                if profile and metric == 'eval_b1':
                    extra += f'layers measured at batch {batch}: '
                add(f'{r.kw} {METRIC_NAMES[metric]} KW/plain', ratio, model_targets[key],
                    extra + (profile or ''))
        layer_target = targets.layers.get(r.kw)
        if layer_target is not None and rows:
            worst = max(rows, key=lambda row: row['kw_over_limit'])
            over = [row for row in rows if row['kw_over_limit'] > layer_target]
            text = ', '.join(f"{row['name']} {row['kw_over_limit']:.2f}x ({row['path']})"
                             for row in over)
            add(f'{r.kw} every KW layer KW/limit (worst {worst["name"]})',
                worst['kw_over_limit'], layer_target,
                f'{len(over)} of {len(rows)} layers over: {text}')
        for metric, value in (loads or {}).get(r.kw, {}).items() if targets.load else ():
            add(f'{r.kw} {METRIC_NAMES[metric]} KW/plain under load / quiet', value,
                targets.load, None)
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------- session
def format_session(session: dict, targets: Targets = NO_TARGETS) -> str:
    """The machine header, the pair table, the limit tables, the load ratios and the
    report on ``targets`` of :func:`~kw_mm.analysis.bench_session.run_session`."""
    batch, loads, limits = session['batch'], session['loads'], session['limits']
    parts = [session['machine'].header(), format_pairs(session['results'], batch, targets)]
    if limits:
        parts.append('Limits (plain + assembly at the GEMM rate, or the warehouse read at the '
                     'memory bandwidth where that is longer, + attention; train: assembly and '
                     f'attention x{TRAIN_FACTOR}):\n\n' + format_model_limits(
                         limits, batch))
        for name, lim in limits.items():
            parts.append(f'KW layers of {name}, eval, batch {batch}:\n\n' +
                         format_layer_limits(lim['layers']))
    if loads:
        parts.append(f"Under load ({session['load']} busy core(s)), eval b{batch}, KW/plain "
                     'loaded / quiet: ' + ', '.join(f"{k} {v['eval_bN']:.2f}x"
                                                    for k, v in loads.items() if 'eval_bN' in v))
    parts.append('Targets:\n' + target_report(session['results'], limits, batch, loads, targets))
    return '\n\n'.join(parts)
