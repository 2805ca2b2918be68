"""The model-zoo tables of the documentation, written from the model index.

Every number in them is read from the model index (``model-index.yml`` ->
``configs/metafile.yml``, through :mod:`kw_mm.apis`): the parameter counts it records (measured
on the built models; ``tests/test_models/test_paper_sizes.py`` rebuilds them) and the paper's
figures. No model is built here, so writing or checking the tables takes a second.

The documents hold each table between two marker comments::

    <!-- model-zoo:main:start -->
    ...generated table...
    <!-- model-zoo:main:end -->

:func:`render` gives the tables by name; :func:`update_markdown` replaces the text between the
markers of a document; ``tools/analysis/model_zoo.py --markdown --write`` / ``--check`` apply it
to README.md and docs/model_zoo.md.
"""
import os.path as osp
import re
from typing import Callable, Dict, Iterable, List, Tuple

from kw_mm.apis import ModelInfo, Variant, get_model_index, list_ablations, list_variants

#: How the tables name the families of the index (a family missing here is printed as written
#: in the index).
FAMILY_TITLES = {'resnet18': 'ResNet18', 'resnet50': 'ResNet50', 'mobilenet-v2': 'MobileNetV2 1.0',
                 'mobilenet-v2-w0.5': 'MobileNetV2 0.5', 'convnext-tiny': 'ConvNeXt-Tiny',
                 'deit-tiny': 'DeiT-Tiny', 'deit-small': 'DeiT-Small'}
#: The ViT families: their rows form the DeiT table (paper Table 11), the others the main table.
VIT_FAMILIES = ('deit-tiny', 'deit-small')
LAYOUT_TITLES = {'paper': ' (Table 14)', 'release': ' (release)'}
#: What each ablation setting of the index changes (paper Tables 5-9 and 13).
ABLATION_TITLES = {
    'no-partition': 'kernel partition off (a cell is a whole kernel)',
    'share-layer': 'warehouse shared within each layer',
    'share-none': 'without sharing',
    'share-same-dim': 'sharing between same-dimensioned kernels only',
    'attn-softmax': 'attention function: softmax',
    'attn-sigmoid': 'attention function: sigmoid',
    'attn-relu-l1': 'attention function: max(z, 0) / sum \\|z\\|',
    'init-none': 'without attention initialization',
    'init-all-cells': 'initialization: all the cells to every mixture',
    'init-4-cells': 'initialization: four cells to every mixture',
    'init-2-mixtures': 'initialization: one cell to two mixtures',
}
#: The index collections of the rival methods (DY-Conv, ODConv, CondConv); KW* is in the
#: KernelWarehouse collection with a ``Method``.
RIVAL_COLLECTIONS = ('DY-Conv', 'ODConv', 'CondConv')


def _family(name: str) -> str:
    return FAMILY_TITLES.get(name, name)


def _table(header: List[str], rows: Iterable[List[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return '\n'.join(lines)


def _link(info: ModelInfo, prefix: str) -> str:
    """A markdown link to ``info``'s config, relative to a document ``prefix`` deep."""
    return f'[`{osp.basename(info.config)}`]({prefix}{info.config})'


def _top1(models: List[ModelInfo]) -> str:
    return ' / '.join('-' if m.metric('Top 1 Accuracy') is None else
                      f"{m.metric('Top 1 Accuracy'):.2f}" for m in models)


def _tables(models: List[ModelInfo]) -> str:
    return ' / '.join((m.paper_table or '-').replace('Table ', 'T') for m in models)


def _paper_params(meta: dict) -> str:
    value = meta.get('Paper Parameters (M)')
    if value is None:
        return '-'
    footnote = meta.get('Paper Parameters Footnote')
    return f'{value:.2f}M' + (f' {footnote}' if footnote else '')


def _kw_label(variant: Variant) -> str:
    if not variant.is_kw:
        return '-'
    return variant.budget_label + LAYOUT_TITLES.get(variant.layout or '', '')


def _detectors() -> List[ModelInfo]:
    """The COCO models of the index with the paper's AP (the demo detectors have none)."""
    return [info for info in get_model_index().models.values()
            if info.collection != 'Demo' and info.metric('box AP') is not None]


def _ap(models: List[ModelInfo]) -> str:
    return ', '.join(f"{m.metric('box AP'):.1f} / {m.metric('mask AP'):.1f}" for m in models) or '-'


def variant_rows(variants: Iterable[Variant], prefix: str) -> List[List[str]]:
    """Rows of the docs' main and DeiT tables: exact counts, the paper's, FLOPs, configs."""
    rows = []
    for v in variants:
        flops = f'{v.flops / 1e9:.2f}G' if v.flops else '-'
        rows.append([_family(v.family), _kw_label(v), f'{v.params:,}',
                     _paper_params(v.models[0].metadata), flops, _top1(v.models), _tables(v.models),
                     ', '.join(_link(m, prefix) for m in v.models)])
    return rows


VARIANT_HEADER = ['Backbone', 'KW', 'Params (ours)', 'Params (paper)', 'FLOPs @224',
                  'Paper top-1 (%)', 'Table', 'Config']


def main_table(prefix: str = '../') -> str:
    """The ConvNets of the paper's Tables 1, 2 and 4: one row per variant."""
    return _table(VARIANT_HEADER, variant_rows(
        [v for v in list_variants() if v.family not in VIT_FAMILIES], prefix))


def deit_table(prefix: str = '../') -> str:
    """KW DeiT (paper Table 11)."""
    return _table(VARIANT_HEADER, variant_rows(
        [v for v in list_variants() if v.family in VIT_FAMILIES], prefix))


def readme_table(prefix: str = '') -> str:
    """The README's short table: every ConvNet variant with its params in millions, the paper's
    top-1 and, where the paper fine-tunes it, its COCO box / mask AP (Mask R-CNN 1x, Table 3)."""
    detectors: Dict[str, List[ModelInfo]] = {}
    for info in _detectors():
        detectors.setdefault(info.backbone_variant, []).append(info)
    rows = []
    for v in [v for v in list_variants() if v.family not in VIT_FAMILIES]:
        top1 = ' / '.join(t if t == '-' else f'{t} ({tab})' for t, tab in
                          zip(_top1(v.models).split(' / '), _tables(v.models).split(' / ')))
        configs = ', '.join(_link(m, prefix) for m in v.models)
        rows.append([_family(v.family), _kw_label(v), f'{v.params / 1e6:.2f}M',
                     _paper_params(v.models[0].metadata), top1, _ap(detectors.get(v.name, [])),
                     configs])
    return _table(['Backbone', 'KW', 'Params', 'Params (paper)', 'Paper top-1 (%)',
                   'Paper box / mask AP', 'Config'], rows)


def ablation_table(prefix: str = '../') -> str:
    """The ablation rows (paper Tables 5-9 and 13)."""
    rows = []
    for v in list_ablations():
        rows.append([ABLATION_TITLES.get(v.setting, v.setting), _family(v.family), _kw_label(v),
                     f'{v.params:,}', _paper_params(v.models[0].metadata), _top1(v.models),
                     _tables(v.models), _link(v.models[0], prefix)])
    return _table(['Ablation', 'Backbone', 'KW', 'Params (ours)', 'Params (paper)',
                   'Paper top-1 (%)', 'Table', 'Config'], rows)


def _method(info: ModelInfo) -> str:
    meta = info.metadata
    kernels = str(meta.get('Kernels', ''))
    label = f"{meta['Method']} {kernels if kernels.endswith('x') else kernels + 'x'}"
    return label + (' + CAF' if '_attn-caf_' in info.name else '')


def rival_table(prefix: str = '../') -> str:
    """DY-Conv, ODConv, CondConv and KW* (paper Tables 1, 2, 4, 10 and 17), one row per model
    and method (the configs of several recipes share a row)."""
    grouped: Dict[Tuple[str, str], List[ModelInfo]] = {}
    for info in get_model_index().models.values():
        if info.metadata.get('Method') and info.metric('Top 1 Accuracy') is not None:
            grouped.setdefault((info.metadata['Family'], _method(info)), []).append(info)
    rows = [[_family(family), method, f"{models[0].metadata['Parameters']:,}",
             _paper_params(models[0].metadata), _top1(models), _tables(models),
             ', '.join(_link(m, prefix) for m in models)]
            for (family, method), models in grouped.items()]
    return _table(['Backbone', 'Method', 'Params (ours)', 'Params (paper)', 'Paper top-1 (%)',
                   'Table', 'Config'], rows)


def detection_table(prefix: str = '../') -> str:
    """Mask R-CNN + FPN 1x on COCO (paper Table 3): the paper's box and mask AP."""
    index = get_model_index()
    rows = []
    for info in _detectors():
        if info.backbone_variant:
            variant = index.variants[info.backbone_variant]
            name = _family(variant.family)
            method = 'KW ' + _kw_label(variant) if variant.is_kw else '-'
        else:  # a rival's detector names the ImageNet config of its backbone
            source = index.get_model(info.metadata['Backbone Config'])
            name, method = _family(source.metadata['Family']), _method(source)
        rows.append([name, method, str(info.metadata.get('Epochs', '-')),
                     f"{info.metric('box AP'):.1f}", f"{info.metric('mask AP'):.1f}",
                     _link(info, prefix)])
    return _table(['Backbone', 'Dynamic convolution', 'Epochs', 'box AP (paper)',
                   'mask AP (paper)', 'Config'], rows)


#: The tables by marker name, and the relative prefix of a config link for the document depth.
TABLES: Dict[str, Callable[[str], str]] = {
    'readme': readme_table, 'main': main_table, 'deit': deit_table, 'ablations': ablation_table,
    'rivals': rival_table, 'detection': detection_table}

_MARKER = re.compile(r'(<!-- model-zoo:(?P<name>[\w-]+):start -->\n)(?P<body>.*?)'
                     r'(<!-- model-zoo:(?P=name):end -->)', re.S)


def render(name: str, prefix: str = '') -> str:
    """The table called ``name`` (a key of :data:`TABLES`) with links ``prefix``-relative."""
    if name not in TABLES:
        raise KeyError(f'unknown model-zoo table {name!r}; the tables are {sorted(TABLES)}')
    return TABLES[name](prefix)


def update_markdown(text: str, prefix: str = '') -> Tuple[str, List[str]]:
    """Replace every marked table of ``text`` with its current version.

    Returns:
        tuple[str, list[str]]: The new text and the names of the tables found in it.

    Raises:
        KeyError: If a marker names no table of :data:`TABLES`.
    """
    found = []

    def fill(match: 're.Match') -> str:
        found.append(match['name'])
        return match.group(1) + render(match['name'], prefix) + '\n' + match.group(4)

    return _MARKER.sub(fill, text), found


def link_prefix(path: str, root: str) -> str:
    """The relative path from the document ``path`` back to the repository ``root``."""
    depth = osp.relpath(osp.abspath(path), osp.abspath(root)).count(osp.sep)
    return '../' * depth


def stale_tables(paths: Iterable[str], root: str) -> List[str]:
    """``path: table`` for every marked table of ``paths`` that differs from the index."""
    stale = []
    for path in paths:
        with open(path) as f:
            text = f.read()
        new, names = update_markdown(text, link_prefix(path, root))
        if not names:
            stale.append(f'{path}: no model-zoo markers')
        elif new != text:
            old_tables = {m['name']: m['body'] for m in _MARKER.finditer(text)}
            new_tables = {m['name']: m['body'] for m in _MARKER.finditer(new)}
            stale += [f'{path}: {n}' for n in names if old_tables[n] != new_tables[n]]
    return stale


def write_tables(paths: Iterable[str], root: str) -> List[str]:
    """Rewrite the marked tables of ``paths``; returns the files that changed."""
    changed = []
    for path in paths:
        with open(path) as f:
            text = f.read()
        new, names = update_markdown(text, link_prefix(path, root))
        if not names:
            raise ValueError(f'{path} has no model-zoo markers (<!-- model-zoo:NAME:start -->, '
                             f'NAME one of {sorted(TABLES)})')
        if new != text:
            with open(path, 'w') as f:
                f.write(new)
            changed.append(path)
    return changed


def markdown(prefix: str = '') -> str:
    """Every table with a heading, as ``--markdown`` prints them."""
    return '\n\n'.join(f'<!-- model-zoo:{name} -->\n' + render(name, prefix) for name in TABLES)


__all__ = ['TABLES', 'render', 'update_markdown', 'stale_tables', 'write_tables', 'markdown',
           'link_prefix', 'readme_table', 'main_table', 'deit_table', 'ablation_table',
           'rival_table', 'detection_table']
