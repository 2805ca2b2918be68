"""The KWBackbone table of docs/model_zoo.md is the output of tools/analysis/kw_wrapped_zoo.py.

The tool writes the whole section between ``<!-- wrapped-zoo:start -->`` and
``<!-- wrapped-zoo:end -->`` (``--write docs/model_zoo.md``). Its count columns (parameters,
FLOPs, warehouses) are rebuilt here from the models and compared; its time ratios hold only for
the machine that measured them, so they are checked for form: either measured, under that
machine's header, or absent and the section says so.
"""
import os.path as osp

import pytest

from kw_mm.analysis.wrapped_zoo import (SECTION_END, SECTION_START, TIMING_COLUMNS,
                                        WRAPPED_MODELS, ZOO_BUDGETS, find_section, format_zoo,
                                        replace_section, table_cells, zoo_rows, zoo_section)

from tests.helpers import REPO_ROOT as ROOT

DOC = osp.join(ROOT, 'docs', 'model_zoo.md')
WRITE = 'python tools/analysis/kw_wrapped_zoo.py --write docs/model_zoo.md'


def doc_section() -> str:
    with open(DOC) as f:
        return find_section(f.read(), DOC)


def counts(cells):
    return [row[:-TIMING_COLUMNS] for row in cells]


@pytest.mark.slow  # builds twenty models and counts their FLOPs at 224x224
def test_counts_are_the_tools():
    rows = zoo_rows(speed=False, log=lambda line: None)
    expected = table_cells(format_zoo(rows))
    assert len(expected) == len(WRAPPED_MODELS) * (1 + len(ZOO_BUDGETS))
    documented = table_cells(doc_section())
    assert counts(documented) == counts(expected), f'rewrite the section: {WRITE}'


def test_time_ratios_come_with_the_machine_they_were_measured_on():
    section = doc_section()
    cells = table_cells(section)
    timings = [row[-TIMING_COLUMNS:] for row in cells]
    assert all(t == ['-'] * TIMING_COLUMNS for row, t in zip(cells, timings) if row[1] == '-')
    measured = [t for row, t in zip(cells, timings) if row[1] != '-']
    if any(v != '-' for t in measured for v in t):
        assert all(v.endswith('x') for t in measured for v in t), measured
        assert '\nCPU: ' in section and '--no-speed' not in section
    else:
        assert 'not measured' in section and 'CPU: ' not in section


def test_section_is_replaced_between_the_markers():
    rows = [dict(name='resnet101', budget=None, params=44_549_160, flops=7.83e9,
                 flops_assembly=0, warehouses=[]),
            dict(name='resnet101', budget=1, params=49_059_784, flops=11.66e9,
                 flops_assembly=3.8e9, warehouses=[dict(n=5)] * 7, eval_bN=1.5, train=2.25)]
    section = zoo_section(rows, machine='CPU: a test machine')
    assert table_cells(section) == [
        ['ResNet-101', '-', '44.55M', '7.83G', '-', '-', '-'],
        ['ResNet-101', '1x', '49.06M', '11.66G (3.80G)', '7: n = 35 in all', '1.50x', '2.25x']]
    text = f'# zoo\n{SECTION_START}\nold\n{SECTION_END}\nafter\n'
    new = replace_section(text, section)
    assert new == f'# zoo\n{SECTION_START}\n{section.rstrip()}\n{SECTION_END}\nafter\n'
    assert find_section(new).rstrip() == section.rstrip()
    assert 'not measured' in zoo_section(rows[:1])
    with pytest.raises(ValueError, match=r'^zoo\.md has no wrapped-zoo section: put the lines '
                       r'<!-- wrapped-zoo:start --> and <!-- wrapped-zoo:end -->'):
        replace_section('# zoo\n', section, 'zoo.md')
