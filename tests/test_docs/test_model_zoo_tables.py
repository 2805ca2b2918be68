"""The model-zoo tables of README.md and docs/model_zoo.md are the model index's.

The tables are written from the index by ``tools/analysis/model_zoo.py --markdown --write``;
no model is built (``tests/test_models/test_paper_sizes.py`` checks the index's counts against
the built models and the paper).
"""
import os.path as osp

import pytest

from kw_mm.analysis import zoo_tables
from kw_mm.apis import list_ablations, list_variants

from tests.helpers import REPO_ROOT as ROOT

DOCS = [osp.join(ROOT, 'README.md'), osp.join(ROOT, 'docs', 'model_zoo.md')]


def test_docs_hold_the_index_tables():
    stale = zoo_tables.stale_tables(DOCS, ROOT)
    assert not stale, ('model-zoo tables out of date (run python tools/analysis/model_zoo.py '
                       f'--markdown --write): {stale}')


def test_every_table_is_in_the_docs():
    found = set()
    for path in DOCS:
        with open(path) as f:
            found.update(zoo_tables.update_markdown(f.read())[1])
    assert found == set(zoo_tables.TABLES)


def test_tables_cover_the_index():
    """Every variant, ablation, rival and detector of the index has its row."""
    rows = {name: zoo_tables.render(name).count('\n') - 1 for name in zoo_tables.TABLES}
    variants = list_variants()
    vit = [v for v in variants if v.family in zoo_tables.VIT_FAMILIES]
    assert rows['main'] == rows['readme'] == len(variants) - len(vit)
    assert rows['deit'] == len(vit) == 6
    assert rows['ablations'] == len(list_ablations()) == 11
    assert rows['rivals'] == 12  # DY-Conv, ODConv, CondConv and KW* rows of Tables 1, 2, 4, 10, 17
    assert rows['detection'] == 13  # Table 3: 9 KW / baseline detectors and 4 rivals
    readme = zoo_tables.render('readme')
    assert '| ResNet50 | 1x | 28.05M | 28.05M | 80.38 (T2) | 41.8 / 38.4 |' in readme
    assert '(configs/kw1x-resnet50_8xb512-300e_in1k.py)' in readme
    assert '(../configs/ablations/' in zoo_tables.render('ablations', '../')


def test_a_changed_table_is_found_and_rewritten(tmp_path):
    doc = tmp_path / 'docs' / 'zoo.md'
    doc.parent.mkdir()
    table = zoo_tables.render('rivals', '../')
    doc.write_text('# zoo\n<!-- model-zoo:rivals:start -->\n'
                   + table.replace('45,472,052', '45,472,053')
                   + '\n<!-- model-zoo:rivals:end -->\ntext after\n')
    assert zoo_tables.stale_tables([str(doc)], str(tmp_path)) == [f'{doc}: rivals']
    assert zoo_tables.write_tables([str(doc)], str(tmp_path)) == [str(doc)]
    assert doc.read_text() == ('# zoo\n<!-- model-zoo:rivals:start -->\n' + table
                               + '\n<!-- model-zoo:rivals:end -->\ntext after\n')
    assert zoo_tables.stale_tables([str(doc)], str(tmp_path)) == []


def test_bad_markers_are_named(tmp_path):
    doc = tmp_path / 'zoo.md'
    doc.write_text('<!-- model-zoo:resnets:start -->\n<!-- model-zoo:resnets:end -->\n')
    with pytest.raises(KeyError, match="unknown model-zoo table 'resnets'; the tables are"):
        zoo_tables.write_tables([str(doc)], str(tmp_path))
    doc.write_text('no markers\n')
    with pytest.raises(ValueError, match='has no model-zoo markers'):
        zoo_tables.write_tables([str(doc)], str(tmp_path))
