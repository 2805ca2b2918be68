"""The CPU the fast paths run on: model name and cache sizes, read from the system.

The fast paths cut a layer's kernels into blocks that should stay in the cache while they are
assembled and used (:mod:`kw_mm.cnn.blocks`). How large that is depends on the CPU (the L2 per
core differs by a factor of two between current server CPUs), so the sizes are read
from the machine instead of being constants tuned on one of them: Linux's
``/sys/devices/system/cpu/cpu0/cache/index*/`` (what ``lscpu`` reads), with
:data:`DEFAULT_CACHES` when that is not available (other systems). Read once per process
(:func:`machine_caches`), never stored in a checkpoint.
"""
import functools
import os
import os.path as osp
import platform
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: Where Linux describes the caches of CPU 0.
SYSFS_CACHE_DIR = '/sys/devices/system/cpu/cpu0/cache'
#: Cache sizes assumed when the system does not report them (bytes; a small modern core).
DEFAULT_CACHES = {1: 32 * 2**10, 2: 1 * 2**20, 3: 4 * 2**20}


@dataclass(frozen=True)
class CacheLevel:
    """One data (or unified) cache level of CPU 0."""

    level: int
    size: int  # bytes
    shared_by: int  # logical CPUs sharing one instance

    @property
    def per_cpu(self) -> int:
        """The share of one logical CPU (bytes)."""
        return self.size // max(1, self.shared_by)


@dataclass(frozen=True)
class MachineCaches:
    """The CPU model and its data cache levels (``levels[1..3]``, when present)."""

    cpu: str
    levels: Tuple[CacheLevel, ...]
    source: str  # where the sizes come from: the sysfs directory or 'defaults'

    def level(self, level: int) -> Optional[CacheLevel]:
        for c in self.levels:
            if c.level == level:
                return c
        return None

    @property
    def l2_per_core(self) -> int:
        """The private cache a thread works in (bytes): L2, or L1 on a CPU without L2."""
        c = self.level(2) or self.level(1)
        return c.per_cpu if c is not None else DEFAULT_CACHES[2]

    def describe(self) -> str:
        """``'L1d 48 KB, L2 2 MB, L3 480 MB shared by 2 CPUs'`` and so on."""
        parts = []
        for c in self.levels:
            name = 'L1d' if c.level == 1 else f'L{c.level}'
            shared = f' shared by {c.shared_by} CPUs' if c.shared_by > 1 else ''
            parts.append(f'{name} {format_bytes(c.size)}{shared}')
        return ', '.join(parts) + ('' if self.source != 'defaults' else ' (assumed)')


def format_bytes(size: float) -> str:
    """``2097152`` -> ``'2 MB'``, ``49152`` -> ``'48 KB'`` (binary units)."""
    for unit, scale in (('GB', 2**30), ('MB', 2**20), ('KB', 2**10)):
        if size >= scale:
            value = size / scale
            return f'{value:.0f} {unit}' if value == int(value) else f'{value:.1f} {unit}'
    return f'{int(size)} B'


def parse_size(text: str) -> int:
    """sysfs sizes: ``'48K'`` -> 49152, ``'2048K'``, ``'32M'``, ``'1G'``, ``'512'``."""
    text = text.strip().upper()
    scale = {'K': 2**10, 'M': 2**20, 'G': 2**30}.get(text[-1:], 1)
    digits = text[:-1] if text[-1:] in 'KMG' else text
    if not digits.isdigit():
        raise ValueError(f'cache size must look like 48K, 2048K, 32M or 512, got {text!r}')
    return int(digits) * scale


def count_cpus(cpu_list: str) -> int:
    """``'0-1'`` -> 2, ``'0,2,4-7'`` -> 6 (the sysfs CPU list format)."""
    count = 0
    for part in cpu_list.strip().split(','):
        if not part:
            continue
        lo, _, hi = part.partition('-')
        count += int(hi or lo) - int(lo) + 1
    return count


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def read_caches(cache_dir: str = SYSFS_CACHE_DIR) -> Tuple[CacheLevel, ...]:
    """The data and unified cache levels described under ``cache_dir`` (sysfs layout),
    smallest level first; empty when there is no such directory."""
    levels: Dict[int, CacheLevel] = {}
    if not osp.isdir(cache_dir):
        return ()
    for entry in sorted(os.listdir(cache_dir)):
        path = osp.join(cache_dir, entry)
        if not entry.startswith('index') or not osp.isfile(osp.join(path, 'size')):
            continue
        try:
            if _read(osp.join(path, 'type')) == 'Instruction':
                continue
            level = int(_read(osp.join(path, 'level')))
            size = parse_size(_read(osp.join(path, 'size')))
            shared_file = osp.join(path, 'shared_cpu_list')
            shared = count_cpus(_read(shared_file)) if osp.isfile(shared_file) else 1
        except (OSError, ValueError):
            continue  # an unreadable entry: the others still describe the machine
        levels[level] = CacheLevel(level, size, shared)
    return tuple(levels[k] for k in sorted(levels))


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` says."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=None)
def machine_caches(cache_dir: str = SYSFS_CACHE_DIR) -> MachineCaches:
    """The CPU model and cache sizes of this machine, read once per process."""
    levels = read_caches(cache_dir)
    if any(c.level == 2 for c in levels):
        return MachineCaches(cpu_model(), levels, cache_dir)
    return MachineCaches(cpu_model(), tuple(CacheLevel(k, v, 1)
                                            for k, v in sorted(DEFAULT_CACHES.items())),
                         'defaults')
