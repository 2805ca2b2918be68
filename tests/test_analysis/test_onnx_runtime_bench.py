"""``tools/analysis/benchmark.py --onnx`` (kw_mm.analysis.onnx_runtime_bench): a tiny pair
exported and run in ONNX Runtime beside PyTorch eager, its table and its target report with the
operator profile of a miss; no timing asserts."""
import json
import os.path as osp
import re

import pytest

from kw_mm.analysis import onnx_runtime_bench as ob
from kw_mm.analysis.op_profile import ort_op_profile
from tests.helpers import REPO_ROOT as ROOT

pytest.importorskip('onnxruntime')

KW = osp.join(ROOT, 'configs', 'kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k.py')
PLAIN = osp.join(ROOT, 'configs', 'mobilenet-v2-w0.5_8xb32-150e_in1k.py')


@pytest.fixture(scope='module')
def pair_result(tmp_path_factory):
    folder = tmp_path_factory.mktemp('onnx')
    result = ob.benchmark_onnx_pair(KW, PLAIN, batch=2, size=64, reps=1, warmup=0,
                                    workdir=str(folder), log=lambda _: None)
    return result, folder


def test_pair_times_four_contestants_with_parity(pair_result):
    result, folder = pair_result
    for key in ('b1', 'bN'):
        assert set(result.times_ms[key]) == set(ob.CONTESTANTS)
        assert set(result.ratios[key]) == set(ob.RATIOS)
        assert set(result.profiles[key]) == {'KW', 'plain'}
    assert set(result.parity) == {result.kw, result.plain}
    # 64x64: at 32x32 MobileNetV2 ends at 1x1 and BatchNorm statistics of two such maps
    # amplify rounding (plain 8e-3). The KW model's attentions are random: its parity measures
    # how far a random KW network amplifies float32 rounding (tests/test_deployment checks it
    # on well-conditioned models).
    assert all(err < 1e-3 for err in result.parity[result.plain].values())
    assert all(0 <= err < float('inf') for err in result.parity[result.kw].values())
    assert osp.isfile(osp.join(folder, f'{result.kw}.onnx'))
    json.dumps(result.to_dict())


def test_report_names_every_target_and_profiles_a_miss(pair_result):
    result, _ = pair_result
    # a ratio above 0 misses a bound of 0, any ratio meets 1e9
    table = ob.format_onnx_results([result], {result.kw: dict(ort=0.0, ort_vs_eager=1e9)})
    rows = [row for row in table.splitlines() if row.startswith('|')]
    assert len(rows) == 2 + 2 and len({row.count('|') for row in rows}) == 1
    report = table.split('Targets:')[1].strip().splitlines()
    assert [line.split(':')[0] for line in report if line.startswith('- ')] == [
        f'- {result.kw} batch 1 ORT KW/plain', f'- {result.kw} batch 1 KW ORT/eager',
        f'- {result.kw} batch 2 ORT KW/plain', f'- {result.kw} batch 2 KW ORT/eager']
    for i, line in enumerate(report):
        if line.endswith('MISSED'):
            assert re.fullmatch(r'  profile \(ONNX Runtime operators, share of node time\): '
                                r'KW .*\d+% \(\d+ calls\).*; plain .*\d+% \(\d+ calls\).*',
                                report[i + 1]), report[i + 1]
    assert sum(line.endswith('MISSED') for line in report) == 2
    assert sum(line.startswith('  profile') for line in report) == 2
    assert 'Targets:' not in ob.format_onnx_results([result])


def test_ort_profile_shares_add_up_over_the_operator_types(pair_result):
    import numpy as np
    import onnx
    result, folder = pair_result
    path = osp.join(folder, f'{result.plain}.onnx')
    feed = {onnx.load(path).graph.input[0].name: np.zeros((1, 3, 64, 64), np.float32)}
    rows = ort_op_profile(path, feed, threads=1, top=100)
    assert 'Conv' in [r.name for r in rows]
    assert abs(sum(r.share for r in rows) - 1.0) < 1e-6
    assert all(r.calls >= 1 for r in rows)


def test_ort_profile_counts_a_scan_body_under_its_own_operators(tmp_path):
    """A Scan is timed including its body: the profile gives it only its own time."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    body = helper.make_graph(
        [helper.make_node('MatMul', ['x_i', 'w'], ['y_i'])], 'body',
        [helper.make_tensor_value_info('x_i', TensorProto.FLOAT, [256, 256])],
        [helper.make_tensor_value_info('y_i', TensorProto.FLOAT, [256, 256])])
    weight = np.random.RandomState(0).randn(256, 256).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node('Scan', ['x'], ['y'], body=body, num_scan_inputs=1)], 'scan',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [8, 256, 256])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [8, 256, 256])],
        [onnx.numpy_helper.from_array(weight, 'w')])
    path = str(tmp_path / 'scan.onnx')
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), path)
    feed = {'x': np.random.RandomState(1).randn(8, 256, 256).astype(np.float32)}
    rows = {r.name: r for r in ort_op_profile(path, feed, threads=1, top=10)}
    assert set(rows) == {'Scan', 'MatMul'}
    assert rows['MatMul'].calls == 8 and rows['Scan'].calls == 1
    assert rows['MatMul'].share > 0.5 > rows['Scan'].share
    assert abs(sum(r.share for r in rows.values()) - 1.0) < 1e-6
