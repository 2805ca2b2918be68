"""Where a model's time goes, by operation: the profile printed under a missed speed target.

:func:`torch_op_profile` profiles a PyTorch step (eager or compiled) with ``torch.profiler``;
:func:`ort_op_profile` profiles an ONNX Runtime session with onnxruntime's own profiler. Both
return :class:`OpShare` rows, the operations that took most of the time, which
:func:`format_op_profile` writes as one line (``Conv 61% (53 calls), MatMul 22% (...)``).
"""
import bisect
import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence


#: How a profile names the code inductor generated (its kernels outside library calls).
GENERATED_CODE = 'inductor-generated code'
#: ONNX operators that run subgraphs; their body's nodes are profiled as nodes of their own.
CONTROL_FLOW = ('Scan', 'Loop', 'If')


@dataclass
class OpShare:
    """One operation (type) of a profile: its share of the profiled time and its call count."""

    name: str
    share: float  # of the summed time of all operations
    calls: int


def _top(totals: Dict[str, float], calls: Dict[str, int], top: int) -> List[OpShare]:
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals, key=totals.get, reverse=True)[:top]
    return [OpShare(name, totals[name] / whole, calls[name]) for name in ranked]


def torch_op_profile(step: Callable[[], object], rounds: int = 3,
                     top: int = 5) -> List[OpShare]:
    """The ``top`` operations of ``step`` by self CPU time over ``rounds`` calls.

    ``step`` should have run before (compiled, warmed): the profile is of the steady state.
    Operations are the profiler's events: ATen operators for eager code, the generated kernels
    (``cpp_fused_...``) and the library calls of a graph compiled by inductor.
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            step()
    totals: Dict[str, float] = defaultdict(float)
    calls: Dict[str, int] = defaultdict(int)
    for event in prof.key_averages():
        # the profiler's own markers (the call of the compiled graph) contain their operations
        if event.key.startswith(('ProfilerStep', 'Torch-Compiled Region', 'CompiledFunction')):
            continue
        # inductor's generated code runs as one event per graph, named by its hash
        name = GENERATED_CODE if event.key.startswith('## Call CompiledFxGraph') else event.key
        totals[name] += event.self_cpu_time_total
        calls[name] += event.count // rounds
    return _top(totals, calls, top)


def ort_op_profile(path: str, feed: Dict[str, object], threads: int,
                   optimization: str = 'all', rounds: int = 3,
                   top: int = 5) -> List[OpShare]:
    """The ``top`` operator types of the ONNX model at ``path`` by node time over ``rounds``
    runs on ``feed`` (onnxruntime's profiler, in a session of its own with the benchmark's
    settings; the first run, which allocates, is left out). A control-flow operator counts
    its own time only: the nodes of its body count under their own types."""
    from .onnx_runtime_bench import ort_session
    with tempfile.TemporaryDirectory() as folder:
        session = ort_session(path, threads, optimization,
                              profile_prefix=os.path.join(folder, 'ort_profile'))
        for _ in range(rounds + 1):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    run_starts = sorted(e['ts'] for e in events if e.get('name') == 'model_run')
    counted_from = run_starts[1] if len(run_starts) > 1 else 0
    nodes = [(e['ts'], e['dur'], e.get('args', {}).get('op_name', '?')) for e in events
             if e.get('cat') == 'Node' and e.get('name', '').endswith('_kernel_time')
             and e['ts'] >= counted_from]
    # A control-flow node (Scan, Loop, If) is timed including the nodes of its body, which
    # are timed too: it keeps only its own time (runs are sequential, one inter-op thread).
    spans = sorted((ts, ts + dur, i) for i, (ts, dur, op) in enumerate(nodes)
                   if op in CONTROL_FLOW)
    starts = [span[0] for span in spans]
    inner = [0.0] * len(nodes)
    for ts, dur, op in nodes:
        k = bisect.bisect_right(starts, ts) - 1
        if op not in CONTROL_FLOW and k >= 0 and ts + dur <= spans[k][1]:
            inner[spans[k][2]] += dur
    totals: Dict[str, float] = defaultdict(float)
    calls: Dict[str, int] = defaultdict(int)
    for i, (ts, dur, op) in enumerate(nodes):
        totals[op] += dur - inner[i]
        calls[op] += 1
    return [OpShare(s.name, s.share, s.calls // rounds) for s in _top(totals, calls, top)]


def format_op_profile(rows: Sequence[OpShare]) -> str:
    """``Conv 61% (53 calls), MatMul 22% (12 calls), ...``: calls per step."""
    return ', '.join(f'{r.name} {r.share:.0%} ({r.calls} calls)' for r in rows)
