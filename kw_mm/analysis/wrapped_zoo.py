"""New KW models from ``kw_mm.KWBackbone``: the table a user chooses one from.

Every model is an ImageNet classifier (1000 classes) whose backbone is one of mmpretrain's,
wrapped by :class:`~kw_mm.models.KWBackbone` at a budget: its parameters, FLOPs at 224x224 (the
kernel assembly and the attentions counted, :mod:`kw_mm.analysis.flops`), its warehouses, and
its eval and training-step time against the plain classifier, measured side by side in one
interleaved run per backbone (:func:`~kw_mm.analysis.benchmark.benchmark_side_by_side`) on the
300-epoch recipe's optimizer. ``tools/analysis/kw_wrapped_zoo.py`` prints the table and writes
it, with the machine header of its timing, as the marked section of ``docs/model_zoo.md``
(:func:`zoo_section`, :func:`replace_section`).
"""
import os.path as osp
import re
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from mmengine.config import Config

from kw_mm.apis import build_model, get_config_path
from .flops import count_params_and_flops


@dataclass
class WrappedModel:
    """A backbone of mmpretrain and the KWBackbone options of its KW versions."""

    name: str
    title: str
    backbone: dict
    head_channels: int
    options: dict = field(default_factory=dict)
    recipe: str = '_base_/resnet_8xb512-300e_in1k.py'
    neck: Optional[dict] = field(default_factory=lambda: dict(type='GlobalAveragePooling'))
    note: str = ''


#: The options follow the paper's model of the same family: Bottleneck ResNets as its ResNet50
#: (the first two layers static; stages of at most its 6 blocks), inverted residuals as its
#: MobileNetV2 (every layer KW, a channel group's first block with the previous group,
#: depth-wise warehouses apart), ConvNeXt as its ConvNeXt-Tiny of Table 14 (every layer KW, one
#: warehouse per kind and group of at most three blocks, LayerNorm attentions).
WRAPPED_MODELS: Dict[str, WrappedModel] = {
    m.name: m for m in [
        WrappedModel('resnet101', 'ResNet-101', dict(type='mmpretrain.ResNet', depth=101),
                     2048, dict(static_depth=2, stage_blocks=6)),
        WrappedModel('resnext50-32x4d', 'ResNeXt-50 32x4d',
                     dict(type='mmpretrain.ResNeXt', depth=50, groups=32, width_per_group=4),
                     2048, dict(static_depth=2)),
        WrappedModel('regnetx-4.0gf', 'RegNetX-4.0GF',
                     dict(type='mmpretrain.RegNet', arch='regnetx_4.0gf'), 1360,
                     dict(static_depth=1)),
        WrappedModel('efficientnet-b0', 'EfficientNet-B0',
                     dict(type='mmpretrain.EfficientNet', arch='b0'), 1280,
                     dict(static_depth=0, handover=3, separate=('dw', ))),
        WrappedModel('convnext-small', 'ConvNeXt-Small',
                     dict(type='mmpretrain.ConvNeXt', arch='small', gap_before_final_norm=True),
                     768, dict(static_depth=0, stage_blocks=3, attention_norm='LN'),
                     recipe='_base_/convnext-tiny_8xb512-300e_in1k.py', neck=None),
    ]
}
#: Input side of the FLOP counts (the papers' convention, whatever size is timed).
FLOPS_SIZE = 224
#: The budgets of the table.
ZOO_BUDGETS = (0.5, 1, 4)


def budget_label(budget: Optional[float]) -> str:
    """``'1/2x'``, ``'1x'``, ``'4x'``; ``'-'`` for the plain model."""
    if budget is None:
        return '-'
    return f'{budget:g}x' if budget >= 1 else f'1/{round(1 / budget)}x'


def classifier_config(model: WrappedModel, budget: Optional[float]) -> Config:
    """The classifier config of ``model`` (plain if ``budget`` is None) on its recipe."""
    # the configs directory of the package (a checkout's or the installed one)
    configs = osp.dirname(get_config_path('resnet50_8xb512-300e_in1k'))
    cfg = Config.fromfile(osp.join(configs, model.recipe))
    backbone = dict(model.backbone)
    if budget is not None:
        backbone = dict(type='kw_mm.KWBackbone', backbone=backbone, budget=budget,
                        **model.options)
    cfg.model.backbone = backbone
    cfg.model.neck = model.neck
    cfg.model.head.in_channels = model.head_channels
    cfg.custom_hooks = []
    return cfg


def model_row(model: WrappedModel, budget: Optional[float], size: int = FLOPS_SIZE) -> dict:
    """Parameters, FLOPs and warehouses of one classifier."""
    torch.manual_seed(0)
    net = build_model(classifier_config(model, budget)).eval()
    stats = count_params_and_flops(net, (1, 3, size, size))
    manager = getattr(net.backbone, 'warehouse_manager', None)
    return dict(name=model.name, budget=budget, params=stats['params'], flops=stats['flops'],
                flops_assembly=stats['flops_kw_assembly'],
                warehouses=manager.summary() if manager is not None else [])


def measure_speed(model: WrappedModel, budgets: Sequence[float], workdir: str, batch: int,
                  size: int, reps: int, warmup: int,
                  log: Callable[[str], None] = print) -> Dict[Optional[float], Dict[str, float]]:
    """KW / plain time ratios (eval at batch ``batch``, training step) of ``model`` at every
    budget, the plain classifier and its KW versions timed in one interleaved run."""
    from .benchmark import benchmark_side_by_side
    paths = []
    for budget in (None, *budgets):
        path = osp.join(workdir, f'{model.name}-{budget_label(budget).replace("/", "d")}.py')
        classifier_config(model, budget).dump(path)
        paths.append(path)
    result = benchmark_side_by_side(paths, batch=batch, size=size, reps=reps, warmup=warmup,
                                    metrics=('eval_bN', 'train'), memory=False, log=log)
    names = result.names
    return {budget: {metric: result.ratios[metric][name] for metric in result.ratios}
            for budget, name in zip((None, *budgets), names)}


def zoo_rows(names: Optional[Sequence[str]] = None, budgets: Sequence[float] = ZOO_BUDGETS,
             speed: bool = True, batch: int = 8, size: int = 224, reps: int = 5,
             warmup: int = 1, log: Callable[[str], None] = print) -> List[dict]:
    """One row per model and budget (the plain model first): counts, and speed ratios if
    ``speed``."""
    unknown = set(names or ()) - set(WRAPPED_MODELS)
    if unknown:
        raise ValueError(f'unknown models {sorted(unknown)}; choose from '
                         f'{list(WRAPPED_MODELS)}')
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in names or WRAPPED_MODELS:
            model = WRAPPED_MODELS[name]
            log(f'{name}: counting')
            model_rows = [model_row(model, b) for b in (None, *budgets)]
            if speed:
                log(f'{name}: timing side by side')
                ratios = measure_speed(model, budgets, workdir, batch, size, reps, warmup, log)
                for row in model_rows:
                    row.update(ratios[row['budget']])
            rows.extend(model_rows)
    return rows


def _warehouses_cell(warehouses: List[dict]) -> str:
    if not warehouses:
        return '-'
    n = ', '.join(str(w['n']) for w in warehouses)
    return f'{len(warehouses)}: n = {n}' if len(warehouses) <= 6 else \
        f'{len(warehouses)}: n = {sum(w["n"] for w in warehouses)} in all'


def table_header(batch: int) -> List[str]:
    """The column titles of the table at batch ``batch``."""
    return ['Backbone', 'KW', 'Params', 'FLOPs (assembly)', 'Warehouses',
            f'Eval b{batch} / plain', f'Train b{batch} / plain']


#: How many columns at the end of a row are measured times (the rest are counts).
TIMING_COLUMNS = 2


def format_zoo(rows: Sequence[dict], batch: int = 8) -> str:
    """The markdown table: one row per model and budget; ``-`` where a ratio was not measured
    (and for the plain model, the reference of every ratio)."""
    header = table_header(batch)
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        flops = f"{r['flops'] / 1e9:.2f}G"
        if r['flops_assembly']:
            flops += f" ({r['flops_assembly'] / 1e9:.2f}G)"
        ratio = {k: (f'{r[k]:.2f}x' if r.get(k) is not None and r['budget'] is not None
                     else '-') for k in ('eval_bN', 'train')}
        title = WRAPPED_MODELS[r['name']].title if r['name'] in WRAPPED_MODELS else r['name']
        lines.append(f"| {title} | {budget_label(r['budget'])} | {r['params'] / 1e6:.2f}M | "
                     f"{flops} | {_warehouses_cell(r['warehouses'])} | {ratio['eval_bN']} | "
                     f"{ratio['train']} |")
    return '\n'.join(lines)


# ------------------------------------------------------------------ the section of the docs
#: The markers around the section the tool writes (``docs/model_zoo.md``).
SECTION_START = '<!-- wrapped-zoo:start -->'
SECTION_END = '<!-- wrapped-zoo:end -->'
_SECTION = re.compile(re.escape(SECTION_START) + r'\n(?P<body>.*?)' + re.escape(SECTION_END),
                      re.S)
#: The command that writes the section, as the section names it.
WRITE_COMMAND = 'python tools/analysis/kw_wrapped_zoo.py --write docs/model_zoo.md'


def zoo_section(rows: Sequence[dict], batch: int = 8, size: int = 224, reps: int = 5,
                threads: int = 2, machine: Optional[str] = None) -> str:
    """The section of the docs: how the table was made, the machine header of its timing
    (``machine``, :meth:`~kw_mm.analysis.machine_report.MachineReport.header`; None: the
    ratios were not measured, and the section says so), and the table."""
    counts = f'parameters and FLOPs at {FLOPS_SIZE}x{FLOPS_SIZE}'
    if machine is None:
        lead = (f'Written by `{WRITE_COMMAND} --no-speed` ({counts}, kernel assembly in '
                'brackets). The eval and training-step columns are not measured in this copy: '
                f'`{WRITE_COMMAND}` times every backbone at every budget side by side with its '
                'plain model and writes this section again, with the header of the machine it '
                'ran on.')
        return f'{lead}\n\n{format_zoo(rows, batch)}\n'
    lead = (f'Written by `{WRITE_COMMAND}` ({counts}, kernel assembly in brackets; eval and '
            f'training step at batch {batch}, {size}x{size}, {threads} threads: the KW model\'s '
            f'time over its plain model\'s, the median of the ratios of {reps} interleaved '
            'rounds). The ratios hold for the machine below only:')
    return f'{lead}\n\n{machine}\n\n{format_zoo(rows, batch)}\n'


def find_section(text: str, path: str = 'the document') -> str:
    """The body of the marked section of ``text``.

    Raises:
        ValueError: ``text`` has no section between :data:`SECTION_START` and
            :data:`SECTION_END` (named with ``path``).
    """
    match = _SECTION.search(text)
    if match is None:
        raise ValueError(f'{path} has no wrapped-zoo section: put the lines {SECTION_START} and '
                         f'{SECTION_END} where the table goes')
    return match['body']


def replace_section(text: str, section: str, path: str = 'the document') -> str:
    """``text`` with its marked section replaced by ``section``."""
    find_section(text, path)
    return _SECTION.sub(lambda m: f'{SECTION_START}\n{section.rstrip()}\n{SECTION_END}', text,
                        count=1)


def table_cells(section: str) -> List[List[str]]:
    """The cells of every row of the table in ``section`` (header and rule left out)."""
    lines = [line for line in section.splitlines() if line.startswith('|')]
    return [[cell.strip() for cell in line.strip('|').split('|')] for line in lines[2:]]
