"""The machine a benchmark runs on: CPU, caches, threads, measured GEMM rate and memory
bandwidth, competing load.

A speed ratio means little without the machine: the same code gives different KW/plain ratios
on CPUs of different cache sizes and matrix-product rates. Every benchmark table therefore names
the CPU model, its cache sizes (read from the system, :mod:`kw_mm.cnn.cpu_caches`) and the thread
count, and measures the machine's matrix-product rate and the rate at which it reads memory,
from which :mod:`kw_mm.analysis.limit` computes what a KW layer cannot beat on that machine.
:func:`competing_load` keeps cores busy with another process, for measuring under load.
"""
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import torch

from kw_mm.cnn.cpu_caches import machine_caches

#: Side of the square float32 product whose rate is "the GEMM rate" of the machine: large
#: enough for the library's best kernels, small enough (3 MB of operands) to measure in
#: milliseconds.
GEMM_SIZE = 512


def best_seconds(fn: Callable[[], object], threads: Optional[int] = None,
                 seconds: float = 0.3, min_rounds: int = 3) -> float:
    """The fastest of as many calls of ``fn`` as fit in ``seconds`` (at least ``min_rounds``)
    at ``threads`` threads (the previous count is restored): the rate the cores reach when
    nothing disturbs them, which is what a limit should assume (on a busy machine the best
    round is the least disturbed one). Call ``fn`` once before, to warm it up."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        best = float('inf')
        deadline = time.perf_counter() + seconds
        rounds = 0
        while rounds < min_rounds or time.perf_counter() < deadline:
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
            rounds += 1
    finally:
        torch.set_num_threads(previous)
    return best


def measure_gemm_rate(threads: Optional[int] = None, size: int = GEMM_SIZE,
                      seconds: float = 0.3) -> float:
    """The machine's matrix-product rate in FLOP/s (one multiply-add = one FLOP, as
    :mod:`kw_mm.analysis.flops` counts), at ``threads`` threads: the best of as many
    ``size``-cube float32 products as fit in ``seconds`` (:func:`best_seconds`).

    Args:
        threads (int, optional): Defaults to ``torch.get_num_threads()``.
        size (int): Side of the square matrices. Defaults to :data:`GEMM_SIZE`.
        seconds (float): Time budget. Defaults to 0.3.
    """
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    out = torch.mm(a, b)
    return size**3 / best_seconds(lambda: torch.mm(a, b, out=out), threads, seconds)


#: Megabytes read to measure the memory bandwidth: far beyond the caches of a CPU (a warehouse
#: that the assembly reads at batch 1 is 12-50 MB; the hypervisor of a cloud machine may report
#: a large shared "L3" that other tenants share).
BANDWIDTH_MB = 256


def measure_memory_bandwidth(threads: Optional[int] = None, megabytes: int = BANDWIDTH_MB,
                             seconds: float = 0.3) -> float:
    """The rate at which the machine reads memory, in bytes/s, at ``threads`` threads: the
    best of as many sums of a ``megabytes`` float32 buffer as fit in ``seconds``
    (:func:`best_seconds`), a stream read, as the assembly reads a warehouse that is not in
    the cache.

    Args:
        threads (int, optional): Defaults to ``torch.get_num_threads()``.
        megabytes (int): Size of the buffer. Defaults to :data:`BANDWIDTH_MB`.
        seconds (float): Time budget. Defaults to 0.3.
    """
    buf = torch.ones(megabytes * 2**20 // 4)
    buf.sum()  # pages mapped before timing
    return buf.numel() * buf.element_size() / best_seconds(buf.sum, threads, seconds)


@dataclass
class MachineReport:
    """What a benchmark's numbers depend on."""

    cpu: str
    caches: str
    l2_per_core: int
    cpu_count: int
    threads: int
    gemm_flops: float  # FLOP/s at ``threads``
    loadavg: Optional[Tuple[float, float, float]]
    competing_processes: int = 0
    memory_bandwidth: Optional[float] = None  # bytes/s read at ``threads``, if measured

    def to_dict(self) -> dict:
        return asdict(self)

    def header(self) -> str:
        """One line for the top of a table."""
        load = ('-' if self.loadavg is None else
                '/'.join(f'{v:.1f}' for v in self.loadavg))
        text = (f'CPU: {self.cpu} ({self.cpu_count} CPUs); caches: {self.caches}; '
                f'{self.threads} threads; GEMM rate {self.gemm_flops / 1e9:.0f} GFLOP/s '
                f'({GEMM_SIZE}^3 float32, best round); ')
        if self.memory_bandwidth:
            text += (f'memory read {self.memory_bandwidth / 1e9:.0f} GB/s (stream read, best '
                     'round); ')
        text += f'load average {load}'
        if self.competing_processes:
            text += f'; {self.competing_processes} competing busy process(es)'
        return text


def loadavg() -> Optional[Tuple[float, float, float]]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover (not on every system)
        return None


def machine_report(threads: Optional[int] = None, gemm_seconds: float = 0.3,
                   competing_processes: int = 0,
                   bandwidth_megabytes: int = BANDWIDTH_MB) -> MachineReport:
    """Describe this machine and measure its GEMM rate and memory bandwidth at ``threads``
    threads (``bandwidth_megabytes=0``: no bandwidth)."""
    caches = machine_caches()
    threads = threads or torch.get_num_threads()
    bandwidth = (measure_memory_bandwidth(threads, bandwidth_megabytes, gemm_seconds)
                 if bandwidth_megabytes else None)
    return MachineReport(caches.cpu, caches.describe(), caches.l2_per_core,
                         os.cpu_count() or 1, threads,
                         measure_gemm_rate(threads, seconds=gemm_seconds), loadavg(),
                         competing_processes, bandwidth)


#: The competing process: a busy loop, as a data-loading worker or a second job would be.
_BUSY_LOOP = 'while True:\n    pass\n'


@contextmanager
def competing_load(processes: int = 1) -> Iterator[List[subprocess.Popen]]:
    """Keep ``processes`` CPU cores busy with other processes while the block runs.

    Each is a Python busy loop (one core each), started before the block and ended (by its
    own process handle) after it, also on errors.
    """
    if processes < 0:
        raise ValueError(f'processes must be >= 0, got {processes}')
    procs = [subprocess.Popen([sys.executable, '-c', _BUSY_LOOP]) for _ in range(processes)]
    try:
        time.sleep(0.2 if procs else 0)  # let them start spinning
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def run_pairs(pairs, threads: int, describe, run_pair, log=print):
    """Run ``run_pair(kw, plain)`` for every pair at ``threads`` threads (restored after),
    logging the machine header and ``describe(kw, plain)`` before each; returns the machine
    report and the results."""
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        machine = machine_report(threads)
        log(machine.header())
        results = []
        for i, (kw, plain) in enumerate(pairs, 1):
            log(f'[{i}/{len(pairs)}] {describe(kw, plain)}')
            results.append(run_pair(kw, plain))
    finally:
        torch.set_num_threads(previous)
    return machine, results
