"""One benchmark session of KW models against their plain twins, on the machine at hand.

What ``make bench`` measures (``tools/analysis/benchmark.py``): the machine (CPU, caches,
threads, measured GEMM rate, load; :mod:`kw_mm.analysis.machine_report`), the pairs of
:mod:`kw_mm.analysis.benchmark`, the limits of every model and KW layer
(:mod:`kw_mm.analysis.limit`) and the ratios under a competing load;
:func:`kw_mm.analysis.report.format_session` prints it with the targets the tool sets.
"""
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from kw_mm.cnn.explain import explain_layer, explain_model, format_explanation
from kw_mm.cnn.plan import planning_as
from . import benchmark as bm
from . import limit as lm
from .contestants import build_spec, load_spec
from .machine_report import competing_load, machine_report


def run_session(pairs: Sequence[Tuple[str, str]], threads: int, batch: int = 8,
                size: int = 224, reps: int = 10, warmup: int = 2,
                metrics: Sequence[str] = ('eval_b1', 'eval_bN', 'train'),
                with_reference: bool = False, memory: bool = True, limits: bool = True,
                load: int = 0, log: Callable[[str], None] = print) -> dict:
    """Benchmark ``pairs`` (KW, plain), their limits and (``load`` > 0) their eval ratio with
    ``load`` cores kept busy by competing processes.

    Returns:
        dict: ``machine`` (:class:`~kw_mm.analysis.machine_report.MachineReport`), ``results``
        (:class:`~kw_mm.analysis.benchmark.PairResult` list), ``limits`` (name ->
        :func:`~kw_mm.analysis.limit.pair_limits`), ``loaded`` (PairResult list) and ``loads``
        (name -> :func:`~kw_mm.analysis.limit.load_ratios`), ``batch``, ``load``.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(pairs, threads, batch, size, reps, warmup, metrics, with_reference, memory,
                    limits, load, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(pairs, threads, batch, size, reps, warmup, metrics, with_reference, memory, limits,
         load, log) -> dict:
    machine = machine_report(threads)
    log(machine.header())
    results: List[bm.PairResult] = []
    model_limits: Dict[str, dict] = {}
    loaded_results: List[bm.PairResult] = []
    loads: Dict[str, Dict[str, float]] = {}
    for i, (kw, plain) in enumerate(pairs, 1):
        log(f'[{i}/{len(pairs)}] {kw} vs {plain} (threads={threads}, batch={batch})')
        result = bm.benchmark_pair(kw, plain, batch, size, reps, warmup, metrics, with_reference,
                                   memory, flops=limits, log=log)
        results.append(result)
        if limits:
            log('  limits: every KW layer alone')
            model_limits[result.kw] = lm.pair_limits(kw, result, machine.gemm_flops, batch, size,
                                                     bandwidth=machine.memory_bandwidth)
        if load:
            log(f'  eval_bN with {load} busy core(s)')
            with competing_load(load):
                loaded = bm.benchmark_pair(kw, plain, batch, size, reps, warmup, ['eval_bN'],
                                           memory=False, flops=False, log=lambda text: None)
            loaded_results.append(loaded)
            loads[result.kw] = lm.load_ratios(result, loaded)
    return dict(machine=machine, results=results, limits=model_limits, loaded=loaded_results,
                loads=loads, batch=batch, load=load)


def session_to_dict(session: dict) -> dict:
    """:func:`run_session`'s result as JSON-ready data."""
    return dict(machine=session['machine'].to_dict(),
                pairs=[r.to_dict() for r in session['results']],
                loaded=[r.to_dict() for r in session['loaded']], limits=session['limits'],
                loads=session['loads'])


def explain_models(specs: Sequence[str], batch: int = 8, size: int = 224,
                   device_type: Optional[str] = None) -> str:
    """The plan of every KW layer of every model in ``specs`` (configs or paper variants) at
    ``batch`` x ``size``, and why (``--explain``); planned as ``device_type`` would
    (:func:`~kw_mm.cnn.plan.planning_as`) if given."""
    texts = []
    with planning_as(device_type) if device_type else nullcontext():
        for spec in specs:
            model = build_spec(load_spec(spec)).eval()
            plans = explain_model(model, torch.randn(batch, 3, size, size))
            texts.append(f'# {spec} (batch {batch}, {size}x{size})\n' +
                         format_explanation(plans))
    return '\n\n'.join(texts)


def explain_layer_spec(in_channels: int, out_channels: int, kernel_size: int, size: int,
                       batch: int = 8, stride: int = 1, groups: int = 1,
                       budget: float = 1.0, device_type: Optional[str] = None) -> str:
    """The plan of one KW layer in a warehouse of its own (as ``--layer`` builds it)."""
    net, _ = bm.make_kw_layer(in_channels, out_channels, kernel_size, stride, groups,
                              budget=budget)
    layer, shape = net.layer, (batch, in_channels, size, size)
    with planning_as(device_type) if device_type else nullcontext():
        plans = [explain_layer(layer.geometry, shape, num_cells=layer.cells.shape[0],
                               needs_grad=grad) for grad in (False, True)]
        return format_explanation([('layer', *plans)])
