"""The sets ``tools/analysis/benchmark.py`` measures by name, and the targets it holds them to.

``PRESETS``: KW configs with their plain twins and the settings of a run (``--preset``);
``SIDE_BY_SIDE_PRESETS``: the paper's side-by-side sets (``--side-by-side NAME``, the plain
model first); ``TARGETS``, ``ONNX_TARGETS``, ``COMPILE_TARGETS``: what ``make bench`` reports as
met or MISSED (KW time / plain time, 2 threads, batch 8, 224x224, on any x86 CPU), eager, in
ONNX Runtime and compiled. Configs are named as in the model index (found in
the installed package outside a checkout).
"""
from typing import Dict, List

from kw_mm.analysis.report import Targets

#: The target set of ``make bench``: (KW config, plain twin), 2 threads, batch 8, 224x224.
PRESETS: Dict[str, dict] = {
    'paper-cpu': dict(
        pairs=[
            ('configs/kw1x-resnet18_8xb32_in1k.py', 'configs/resnet18_8xb32_in1k.py'),
            ('configs/kw4x-resnet18_8xb32_in1k.py', 'configs/resnet18_8xb32_in1k.py'),
            ('configs/kw1x-resnet50_8xb512-300e_in1k.py', 'configs/resnet50_8xb512-300e_in1k.py'),
            ('configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
             'configs/mobilenet-v2_8xb32-150e_in1k.py'),
        ],
        threads=2, batch=8, size=224,
        # --onnx: the exported models in ONNX Runtime (kw_mm/analysis/onnx_runtime_bench.py)
        onnx_pairs=[
            ('configs/kw1x-resnet18_8xb32_in1k.py', 'configs/resnet18_8xb32_in1k.py'),
            ('configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
             'configs/mobilenet-v2_8xb32-150e_in1k.py'),
        ],
        # --compile: both models compiled by torch.compile (kw_mm/analysis/compiled_bench.py)
        compile_pairs=[
            ('configs/kw1x-resnet18_8xb32_in1k.py', 'configs/resnet18_8xb32_in1k.py'),
            ('configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
             'configs/mobilenet-v2_8xb32-150e_in1k.py'),
        ],
        # --amp: under autocast at t = 0.5 and 0 and in float32 (kw_mm/analysis/amp_bench.py)
        amp_pairs=[
            ('configs/kw1x-resnet18_8xb32_in1k.py', 'configs/resnet18_8xb32_in1k.py'),
            ('configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
             'configs/mobilenet-v2_8xb32-150e_in1k.py'),
        ]),
}

#: The paper's side-by-side sets (Tables 12 and 16): the plain model first.
SIDE_BY_SIDE_PRESETS: Dict[str, List[str]] = {
    'rivals-resnet50': [
        'configs/resnet50_8xb512-300e_in1k.py',
        'configs/dyconv4x-resnet50_8xb512-300e_in1k.py',
        'configs/odconv4x-resnet50_8xb512-300e_in1k.py',
        'configs/kw1d2x-resnet50_8xb512-300e_in1k.py',
        'configs/kw1x-resnet50_8xb512-300e_in1k.py',
        'configs/kw4x-resnet50_8xb512-300e_in1k.py',
    ],
    'rivals-mobilenet-v2': [
        'configs/mobilenet-v2_8xb32-150e_in1k.py',
        'configs/dyconv4x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/odconv4x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/kw1d2x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/kw4x-mobilenet-v2_8xb32-150e_in1k.py',
        'configs/kwstar4x-mobilenet-v2_8xb32-150e_in1k.py',
    ],
    'rivals-resnet18': [
        'configs/resnet18_8xb32_in1k.py',
        'configs/condconv8x-resnet18_8xb32_in1k.py',
        'configs/dyconv4x-resnet18_8xb32_in1k.py',
        'configs/odconv4x-resnet18_8xb32_in1k.py',
        'configs/kw1x-resnet18_8xb32_in1k.py',
        'configs/kw4x-resnet18_8xb32_in1k.py',
    ],
}

#: The targets of ``make bench``, keyed by KW config name: KW/plain per metric, every KW layer
#: within a factor of its limit (eval, batch 8), and at most this growth of KW/plain under a
#: competing busy process (eval, batch 8).
TARGETS = Targets(
    models={
        'kw1x-resnet18_8xb32_in1k': dict(eval_b8=1.5, train=1.8, eval_b1=1.5),
        'kw4x-resnet18_8xb32_in1k': dict(eval_b8=2.2),
        'kw1x-resnet50_8xb512-300e_in1k': dict(eval_b8=1.8),
        'kw1x-mobilenet-v2_8xb32-150e_in1k': dict(eval_b8=1.5),
    },
    layers={
        'kw1x-resnet18_8xb32_in1k': 1.5,
        'kw4x-resnet18_8xb32_in1k': 1.5,
        'kw1x-resnet50_8xb512-300e_in1k': 1.5,
    },
    load=1.5,
    batch=8)

#: The targets of ``--onnx`` (both models exported with a symbolic batch, ONNX Runtime's CPU
#: provider, 2 threads, 224x224, at batch 1 and N), keyed by KW config name: ``ort`` = KW / plain
#: in ONNX Runtime, ``ort_vs_eager`` = the KW model in ONNX Runtime / in PyTorch eager.
ONNX_TARGETS: Dict[str, Dict[str, float]] = {
    'kw1x-resnet18_8xb32_in1k': dict(ort=2.0, ort_vs_eager=1.0),
    'kw1x-mobilenet-v2_8xb32-150e_in1k': dict(ort=2.0, ort_vs_eager=1.0),
}

#: The targets of ``--compile`` (``torch.compile``, inductor, static shapes, 2 threads, 224x224),
#: keyed by KW config name: ``compiled`` bounds KW / plain both compiled, ``compiled_vs_eager``
#: the compiled KW model over the same model in eager, per metric (``eval_b1``, ``eval_b8``:
#: at batch 8 only, ``train``).
COMPILE_TARGETS: Dict[str, Dict[str, Dict[str, float]]] = {
    'kw1x-resnet18_8xb32_in1k': dict(
        compiled=dict(eval_b1=1.5, eval_b8=1.5),
        compiled_vs_eager=dict(eval_b1=1.0, eval_b8=1.0, train=1.0)),
    'kw1x-mobilenet-v2_8xb32-150e_in1k': dict(
        compiled=dict(eval_b8=1.5),
        compiled_vs_eager=dict(eval_b1=1.0, eval_b8=1.0, train=1.0)),
}
