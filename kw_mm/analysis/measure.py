"""Timing and memory measurement for the benchmarks: interleaved rounds, per-round ratios, peak
tensor memory, and the process settings they depend on (clock, C allocator).

Every measurement runs the contestants **interleaved** (:func:`interleaved_times`): one round
times each contestant once, in turn, so that a slow phase of a shared machine hits all of them
alike; ratios are the median over rounds of the per-round ratios (:func:`ratio_stats`).
"""
import gc
import os
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch

from kw_mm.cnn.cpu_caches import cpu_model


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
    happens depends on what the process ran before (a model measured first in a process
    pays for page faults that the same model measured later does not). ``'warm'`` keeps
    freed memory in the heap (``mallopt``: no ``mmap`` below 1 GB, no trimming), the steady
    state of a long-running job, so every contestant is measured alike whatever ran before.
    ``'system'`` leaves glibc's defaults. No-op (returns ``'system'``) without glibc. The
    kernel may still reclaim freed pages that stay idle (memory reclaim daemons); inside a
    timing loop they are reused at once. The regime belongs to the process (``malloc`` has
    one), so this is a process setting, made once by the tool that measures.

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


def allocator() -> str:
    """The C allocator regime in effect (:func:`set_allocator`)."""
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
    """Peak tensor memory (bytes) allocated by ``fn`` above what was allocated before it.

    On CUDA ``torch.cuda.max_memory_allocated``; elsewhere the allocation events of
    ``torch.profiler`` (the CPU keeps no allocator statistics).
    """
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


def environment() -> dict:
    """What the numbers depend on: torch, threads, CPU, load, allocator."""
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = None
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_model(),
                cpu_count=os.cpu_count(), loadavg=load, python=platform.python_version(),
                allocator=_allocator)
