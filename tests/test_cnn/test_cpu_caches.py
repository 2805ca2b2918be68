"""Cache sizes read from the system (kw_mm.cnn.cpu_caches) and the block budgets made from them."""
import os

import pytest
import torch

from kw_mm.cnn.functional import KWGeometry
from kw_mm.cnn.plan import THRESHOLDS, plan_layer
from kw_mm.cnn.cpu_caches import (CacheLevel, MachineCaches, count_cpus, format_bytes,
                               machine_caches, parse_size, read_caches)


def fake_sysfs(root, entries):
    """A sysfs cache directory: ``entries`` = [(level, type, size, shared_cpu_list)]."""
    for i, (level, kind, size, shared) in enumerate(entries):
        d = root / f'index{i}'
        d.mkdir()
        (d / 'level').write_text(f'{level}\n')
        (d / 'type').write_text(f'{kind}\n')
        (d / 'size').write_text(f'{size}\n')
        (d / 'shared_cpu_list').write_text(f'{shared}\n')
    return str(root)


#: An AMD EPYC Zen 4 as the issue describes it: 1 MB L2 per core, 32 MB L3 per 8 cores.
ZEN4 = [(1, 'Data', '32K', '0'), (1, 'Instruction', '32K', '0'), (2, 'Unified', '1024K', '0'),
        (3, 'Unified', '32768K', '0-7')]


def test_parse_sizes_and_cpu_lists():
    assert parse_size('48K') == 48 * 1024 and parse_size('2048K') == 2 * 2**20
    assert parse_size('32M') == 32 * 2**20 and parse_size('512') == 512
    with pytest.raises(ValueError, match="got 'LOTS'"):
        parse_size('lots')
    assert count_cpus('0-1') == 2 and count_cpus('0,2,4-7') == 6 and count_cpus('3') == 1
    assert format_bytes(2 * 2**20) == '2 MB' and format_bytes(1.5 * 2**20) == '1.5 MB'
    assert format_bytes(48 * 1024) == '48 KB' and format_bytes(100) == '100 B'


def test_read_caches_from_sysfs_layout(tmp_path):
    levels = read_caches(fake_sysfs(tmp_path, ZEN4))
    assert levels == (CacheLevel(1, 32 * 2**10, 1), CacheLevel(2, 2**20, 1),
                      CacheLevel(3, 32 * 2**20, 8))  # the instruction cache is skipped
    caches = MachineCaches('AMD EPYC', levels, str(tmp_path))
    assert caches.l2_per_core == 2**20 and caches.level(3).per_cpu == 4 * 2**20
    assert caches.describe() == 'L1d 32 KB, L2 1 MB, L3 32 MB shared by 8 CPUs'


def test_machine_caches_falls_back_to_defaults(tmp_path):
    caches = machine_caches(str(tmp_path / 'missing'))
    assert caches.source == 'defaults' and caches.l2_per_core == 2**20
    assert caches.describe().endswith('(assumed)')
    # this machine: whatever sysfs says, L2 is read from it when it exists
    here = machine_caches()
    if os.path.isdir('/sys/devices/system/cpu/cpu0/cache/index2'):
        assert here.source != 'defaults' and here.l2_per_core >= 256 * 2**10


def test_block_budgets_follow_the_machine(tmp_path):
    """The same layer is cut into smaller blocks on a CPU with a smaller L2: the budget is the
    path's share x L2 per core x threads."""
    zen4 = MachineCaches('AMD', read_caches(fake_sysfs(tmp_path, ZEN4)), 'fake')
    intel = MachineCaches('Intel', (CacheLevel(2, 2 * 2**20, 1), ), 'fake')
    geo = KWGeometry(2, 512, 512, (3, 3), (1, 1), (1, 1), (1, 1), 1, 512, 512)

    def plan(caches, threads, needs_grad=False, shape=(8, 512, 7, 7)):
        return plan_layer(geo, shape, torch.float32, 'cpu', needs_grad, caches, threads=threads)

    assert plan(zen4, 2, shape=(8, 512, 56, 56)).budget == 2 * 2**20  # grouped: 1 x L2
    assert plan(zen4, 2).budget == 8 * 2**20  # im2col: 4 x L2
    assert plan(intel, 2, shape=(8, 512, 56, 56)).budget == 4 * 2**20
    assert plan(intel, 2).budget == 16 * 2**20
    assert plan(intel, 2, needs_grad=True).budget == 8 * 2**20  # im2col with gradients
    assert plan(intel, 1).budget == THRESHOLDS.l2_share_im2col * 2 * 2**20
    small, large = plan(zen4, 2), plan(intel, 2)
    assert len(small.blocks) > len(large.blocks) > 1
    assert small.l2_per_core == 2**20 and '4 x L2 1 MB x 2 threads' in small.describe()
