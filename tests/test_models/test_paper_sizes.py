"""The paper's figures (paper Tables 1, 2, 4 and 14) and the model-zoo table of ``make demo``.

The expected numbers are copied here from the paper (Tables 1, 2, 4 and 14), independently
of the model index (``configs/metafile.yml``): every variant's total parameters (1000-class
classifier) to 0.01M and m and n per warehouse. Models are built on the meta device (shapes only).
"""
import re
import subprocess
import sys

import pytest

from kw_mm.cnn import WarehouseManager
from kw_mm.apis import build_model, get_variant, list_variants

from tests.helpers import REPO_ROOT as ROOT

#: The total parameters printed in the paper (Tables 1, 2, 4, 11; M), by variant name.
PAPER_PARAMS = {
    'resnet18': 11.69, 'kw1d4x_resnet18': 4.08, 'kw1d2x_resnet18': 7.43, 'kw1x_resnet18': 11.93,
    'kw2x_resnet18': 23.24, 'kw4x_resnet18': 45.86,
    'resnet50': 25.56, 'kw1d2x_resnet50': 17.64, 'kw1x_resnet50': 28.05,
    'kw4x_resnet50': 102.02,
    'mobilenetv2_100': 3.50, 'kw1d2x_mobilenetv2_100': 2.65, 'kw1x_mobilenetv2_100': 5.17,
    'kw4x_mobilenetv2_100': 11.38,
    'mobilenetv2_050': 1.97, 'kw1d2x_mobilenetv2_050': 1.47, 'kw1x_mobilenetv2_050': 2.85,
    'kw4x_mobilenetv2_050': 4.65,
    'convnext_tiny': 28.59, 'kw3d4x_convnext_tiny': 24.53, 'kw1x_convnext_tiny': 32.99,
    'kw1x_convnext_tiny_release': 39.37,
    'deit_tiny': 5.72, 'kw1x_deit_tiny': 6.39, 'kw4x_deit_tiny': 20.44,
    'deit_small': 22.06, 'kw3d4x_deit_small': 19.23, 'kw1x_deit_small': 24.36,
}
#: Where the paper's figure is not reproducible (docs/model_zoo.md, notes), and what the reference
#: design gives instead (the 1/4x release; ConvNeXt-Tiny in the Table 14 layout).
KNOWN_DIFFERENCES = {'kw1d4x_resnet18': 4.03, 'kw1x_convnext_tiny': 35.92,
                     'kw3d4x_convnext_tiny': 27.82,
                     # DeiT (Table 11, docs/model_zoo.md "KW DeiT"): the closest counts of the layout, and
                     # mmpretrain's DeiT-Small
                     'kw4x_deit_tiny': 19.99, 'kw3d4x_deit_small': 18.62, 'deit_small': 22.05}

#: Paper Table 14: (m, n) per warehouse. MobileNetV2 1.0 only: the released 0.5x models differ
#: in two warehouses (their layouts are checked against the release in test_kw_mobilenet_v2).
_R18_M, _R18_M4 = [56, 47, 47, 27], [224, 188, 188, 108]
_R50_M = [87, 104, 138, 47]
_CNX = [16, 4, 4, 4] + [147, 24] * 6
TABLE14 = {
    'kw1d4x_resnet18': (_R18_M4, _R18_M),
    'kw1d2x_resnet18': (_R18_M4, [112, 94, 94, 54]),
    'kw1x_resnet18': (_R18_M, _R18_M),
    'kw2x_resnet18': (_R18_M, [112, 94, 94, 54]),
    'kw4x_resnet18': (_R18_M, _R18_M4),
    'kw1d2x_resnet50': ([348, 416, 552, 188], [174, 208, 276, 94]),
    'kw1x_resnet50': (_R50_M, _R50_M),
    'kw4x_resnet50': (_R50_M, [348, 416, 552, 188]),
    'kw1x_convnext_tiny': (_CNX, _CNX),
    'kw3d4x_convnext_tiny': ([16, 4, 4, 4] + [147, 24] * 4 + [147, 96] * 2,
                             [16, 4, 4, 4] + [147, 24] * 4 + [147, 48] * 2),
    'kw1d2x_mobilenetv2_100': ([9, 36, 18, 27, 36, 27, 12, 27, 80, 40],
                               [9, 36, 18, 27, 36, 27, 6, 27, 40, 20]),
    'kw1x_mobilenetv2_100': ([9, 36, 34, 78, 18, 42, 27, 102, 36, 120, 27, 58, 27],
                             [9, 36, 34, 78, 18, 42, 27, 102, 36, 120, 27, 58, 27]),
    'kw4x_mobilenetv2_100': (
        [9, 36, 11, 1, 2, 18, 7, 3, 27, 4, 4, 36, 9, 3, 27, 11, 3, 27, 20],
        [36, 144, 44, 4, 8, 72, 28, 12, 108, 16, 16, 144, 36, 12, 108, 44, 12, 108, 80]),
}


def meta_classifier(name: str):
    cfg = get_variant(name).model_cfg(1000)
    try:
        return build_model(cfg, device='meta')
    except (RuntimeError, NotImplementedError):  # as kw_mm.converters.kw_release.model_shapes
        return build_model(cfg)


def test_every_paper_row_is_covered():
    assert sorted(v.name for v in list_variants()) == sorted(PAPER_PARAMS)


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS))
def test_total_parameters_equal_the_paper_to_001m(name):
    model = meta_classifier(name)
    params = sum(p.numel() for p in model.parameters())
    expected = KNOWN_DIFFERENCES.get(name, PAPER_PARAMS[name])
    assert round(params / 1e6, 2) == expected, params
    assert params == get_variant(name).params  # what the model index records


@pytest.mark.parametrize('name', sorted(TABLE14))
def test_m_and_n_per_warehouse_equal_table14(name):
    model = meta_classifier(name)
    rows = [row for m in model.modules() if isinstance(m, WarehouseManager) for row in m.summary()]
    m, n = TABLE14[name]
    assert [r['m'] for r in rows] == m
    assert [r['n'] for r in rows] == n


@pytest.mark.slow  # starts a subprocess
def test_model_zoo_tool_prints_the_table():
    """What ``make demo`` prints first (tools/analysis/model_zoo.py), on two variants."""
    proc = subprocess.run([sys.executable, 'tools/analysis/model_zoo.py', 'kw1x_resnet18',
                           'kw1d2x_mobilenetv2_050'], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    rows = [line for line in lines if line.startswith('| ')]
    assert rows[0].startswith('| Model | KW | Params (ours) | Paper | Release | FLOPs @224')
    r18 = next(r for r in rows if r.startswith('| resnet18 | 1x |'))
    assert '11.93M (11,932,148) | 11.93M | 11.93M |' in r18
    assert '| 56, 47, 47, 27 | 56, 47, 47, 27 |' in r18
    flops = re.search(r'\| (\d+\.\d+)G \|', r18)
    assert flops and 1.8 < float(flops.group(1)) < 3.0  # ResNet18 1.82G + assembly/attention
    mbv2 = next(r for r in rows if r.startswith('| mobilenet-v2-w0.5 | 1/2x |'))
    assert '1.47M (1,466,888)' in mbv2 and mbv2.endswith('| 9, 36, 18, 27, 36, 27, 6, 27, 56, 20 |')
