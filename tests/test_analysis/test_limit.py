"""The machine report, the limits and the target report (kw_mm.analysis.machine_report / limit /
report): tiny runs, no timing asserts."""
import re

import pytest
import torch
import torch.nn as nn

from kw_mm.analysis import limit as lm
from kw_mm.analysis.benchmark import PairResult
from kw_mm.analysis.machine_report import (competing_load, machine_report, measure_gemm_rate,
                                           measure_memory_bandwidth)
from kw_mm.analysis.report import (Targets, format_layer_limits, format_model_limits,
                                   target_report)
from kw_mm.cnn import KWConvNd, WarehouseManager

KW, PLAIN = 'kw1x-resnet18_8xb32_in1k', 'resnet18_8xb32_in1k'
#: Targets as the tool sets them (tools/analysis/benchmark_presets.py).
TARGETS = Targets(models={KW: dict(eval_b8=1.5, train=1.8, eval_b1=1.5)}, layers={KW: 1.5},
                  load=1.5)


def test_gemm_rate_and_machine_header():
    assert measure_gemm_rate(1, size=64, seconds=0.01) > 0
    assert measure_memory_bandwidth(1, megabytes=4, seconds=0.01) > 0
    report = machine_report(1, gemm_seconds=0.01, competing_processes=1, bandwidth_megabytes=4)
    header = report.header()
    assert header.startswith(f'CPU: {report.cpu}') and '1 threads' in header
    assert 'L2' in header and 'GEMM rate' in header and '1 competing busy' in header
    assert re.search(r'; memory read \d+ GB/s \(stream read, best round\); load average',
                     header)
    assert report.to_dict()['l2_per_core'] == report.l2_per_core
    assert report.memory_bandwidth > 0
    unmeasured = machine_report(1, gemm_seconds=0.01, bandwidth_megabytes=0)
    assert unmeasured.memory_bandwidth is None and 'memory read' not in unmeasured.header()


def test_competing_load_starts_and_ends_its_processes():
    with competing_load(1) as procs:
        assert len(procs) == 1 and procs[0].poll() is None  # spinning
    assert procs[0].returncode is not None
    with competing_load(0) as procs:
        assert procs == []
    with pytest.raises(ValueError, match='got -1'):
        with competing_load(-1):
            pass


def tiny_net() -> nn.Module:
    manager = WarehouseManager()
    net = nn.Module()
    net.manager = manager
    net.conv = manager.reserve(16, 32, 3, padding=1, warehouse_name='w', bias=False)
    manager.store()
    manager.allocate(net)
    return net.eval()


def test_layer_limits_add_up():
    torch.manual_seed(0)
    net = tiny_net()
    rows = lm.layer_limits(net, {'conv': torch.randn(2, 16, 6, 6)}, gemm_flops=1e9, reps=1,
                           warmup=0, with_reference=True)
    (row, ) = rows
    ms = row['ms']
    assert ms['limit'] == pytest.approx(ms['conv'] + ms['attention'] + ms['assembly'])
    geo = net.conv.geometry
    flops = 2 * geo.num_mixtures * net.conv.attention.num_cells * geo.cell_out * geo.cell_in
    assert lm.assembly_flops(net.conv, 2) == flops
    assert ms['assembly'] == pytest.approx(flops / 1e9 * 1e3)
    assert row['kw_over_limit'] == pytest.approx(ms['kw'] / ms['limit'])
    assert row['path'] == 'grouped' and row['blocks'] == 1 and 'grouped' in row['plan']
    # the roofline: a warehouse read slower than the FLOPs sets the assembly time
    cells = net.conv.cells
    assert lm.warehouse_bytes(net.conv) == cells.numel() * 4
    read_ms = cells.numel() * 4 / 1e6 * 1e3  # at 1 MB/s
    assert lm.assembly_ms(net.conv, 2, 1e9, bandwidth=1e6) == pytest.approx(read_ms)
    assert lm.assembly_ms(net.conv, 2, 1e9, bandwidth=1e15) == pytest.approx(flops / 1e9 * 1e3)
    slow = lm.layer_limits(net, {'conv': torch.randn(2, 16, 6, 6)}, gemm_flops=1e9, reps=1,
                           warmup=0, bandwidth=1e6)[0]['ms']
    assert slow['assembly'] == pytest.approx(read_ms)
    assert slow['limit'] == pytest.approx(slow['conv'] + slow['attention'] + read_ms)
    table = format_layer_limits(rows)
    assert len(table.splitlines()) == 4 and '| conv | 32x16x3x3 | 2x16x6x6 |' in table
    assert 'Reference ms' in table


def test_pair_limits_of_a_real_model():
    """The KW ResNet18 at 32x32: every KW layer profiled; the model limit is the plain time
    plus assembly and attentions (x3 for a training step)."""
    result = PairResult(KW, PLAIN)
    result.times_ms = {'eval_bN': {KW: 30.0, PLAIN: 20.0}, 'train': {KW: 90.0, PLAIN: 50.0}}
    result.flops = {KW: {'flops_kw_assembly': 10**8}}
    lim = lm.pair_limits(f'configs/{KW}.py', result, gemm_flops=1e11, batch=2, size=32, reps=1,
                         warmup=0)
    assert len(lim['layers']) == 19
    ev, train = lim['models']['eval_bN'], lim['models']['train']
    att = sum(r['ms']['attention'] for r in lim['layers'])
    assert ev['assembly_ms'] == pytest.approx(2 * 10**8 / 1e11 * 1e3)
    assert ev['attention_ms'] == pytest.approx(att)
    assert ev['limit_ms'] == pytest.approx(20.0 + ev['assembly_ms'] + att)
    assert train['limit_ms'] == pytest.approx(50.0 + 3 * (ev['assembly_ms'] + att))
    assert ev['kw_over_limit'] == pytest.approx(30.0 / ev['limit_ms'])
    # with a memory bandwidth, every layer whose warehouse read takes longer than its FLOPs
    # adds the difference (here: 1 GB/s, so every layer)
    slow = lm.pair_limits(f'configs/{KW}.py', result, gemm_flops=1e11, batch=2, size=32,
                          reps=1, warmup=0, bandwidth=1e9)
    kw_layers = [m for m in lm.prepared_model(f'configs/{KW}.py', 2, 32).modules()
                 if isinstance(m, KWConvNd)]
    extra = sum(lm.warehouse_bytes(m) / 1e9 * 1e3 - lm.assembly_flops(m, 2) / 1e11 * 1e3
                for m in kw_layers)
    assert len(kw_layers) == 19 and extra > 0
    assert slow['models']['eval_bN']['assembly_ms'] == pytest.approx(ev['assembly_ms'] + extra)
    assert ev['kw_over_plain'] == pytest.approx(1.5)  # no per-round ratios: ratio of medians
    # with per-round ratios, the limits table gives the same KW/plain as the pair table
    result.ratios = {'eval_bN': {KW: 1.52}}
    lim = lm.pair_limits(f'configs/{KW}.py', result, gemm_flops=1e11, batch=2, size=32, reps=1,
                         warmup=0)
    assert lim['models']['eval_bN']['kw_over_plain'] == 1.52
    assert '| 1.52x |' in format_model_limits({KW: lim}, 2).splitlines()[2]
    with pytest.raises(ValueError, match='FLOP count'):
        lm.pair_limits(f'configs/{KW}.py', PairResult(KW, PLAIN), 1e11, 2, 32)


def fake_rows(ratios):
    return [dict(name=f'layer{i}', path='im2col', kw_over_limit=r,
                 ms=dict(kw=r * 10.0, limit=10.0, conv=8.0, attention=1.0, assembly=1.0))
            for i, r in enumerate(ratios)]


def test_target_report_met_missed_and_profiles():
    good = PairResult(KW, PLAIN, ratios={'eval_bN': {KW: 1.4}, 'eval_b1': {KW: 1.6},
                                         'train': {KW: 1.7}})
    limits = {KW: dict(layers=fake_rows([1.2, 2.5, 1.1]), models={
        'eval_b1': dict(limit_over_plain=1.2, kw_over_limit=1.33)})}
    loaded = PairResult(KW, PLAIN, ratios={'eval_bN': {KW: 2.8}})
    loads = {KW: lm.load_ratios(good, loaded)}
    assert loads[KW]['eval_bN'] == pytest.approx(2.0)
    text = target_report([good], limits, 8, loads, TARGETS)
    assert f'{KW} eval bN KW/plain: 1.40x (target <= 1.5x): met' in text
    assert f'{KW} train bN KW/plain: 1.70x (target <= 1.8x): met' in text
    assert f'{KW} eval b1 KW/plain: 1.60x (target <= 1.5x): MISSED' in text
    assert 'limit/plain 1.20x, KW/limit 1.33x; layers measured at batch 8: ' in text
    assert 'layer1 25.0 ms vs limit 10.0 (2.50x, im2col' in text
    assert 'every KW layer KW/limit (worst layer1): 2.50x (target <= 1.5x): MISSED' in text
    assert '1 of 3 layers over: layer1 2.50x (im2col)' in text
    assert 'under load / quiet: 2.00x (target <= 1.5x): MISSED' in text
    assert target_report([good], limits, 4, targets=TARGETS).count('eval') == 0  # set for b8
    assert target_report([good], limits, 8, loads) == ''  # the library sets no target
    # on the line: two decimals would print the target itself next to MISSED
    close = PairResult(KW, PLAIN, ratios={'eval_bN': {KW: 1.5021}, 'train': {KW: 1.7979}})
    text = target_report([close], {}, 8, targets=TARGETS)
    assert f'{KW} eval bN KW/plain: 1.502x (target <= 1.5x): MISSED' in text
    assert f'{KW} train bN KW/plain: 1.798x (target <= 1.8x): met' in text


def test_format_model_limits():
    limits = {KW: dict(models={'eval_bN': dict(plain_ms=20.0, kw_ms=30.0, assembly_ms=1.0,
                                               attention_ms=2.0, limit_ms=23.0,
                                               kw_over_plain=1.5, kw_over_limit=30 / 23,
                                               limit_over_plain=1.15)})}
    table = format_model_limits(limits, 8)
    assert f'| {KW} | eval b8 | 30.0 | 20.0 | 1.0 | 2.0 | 23.0 | 1.50x | 1.15x | 1.30x |' in table
