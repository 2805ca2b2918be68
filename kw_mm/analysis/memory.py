"""Memory model of a training step and of inference, per GPU, before renting GPUs.

:func:`measure_memory` measures one model at two small batches on this machine and fits
``bytes(batch) = fixed + per_sample * batch`` through the two points; :func:`estimate` reads
the fit at the config's per-GPU batch (or any other). What is measured:

* **persistent**: parameters, buffers, and (training) the optimizer state, allocated before a
  step starts;
* **step peak**: the largest amount of tensor memory allocated during one step above what was
  allocated before it: gradients, activations, the KW layers' assembled kernels, workspace.
  On CUDA ``torch.cuda.max_memory_allocated``; on the CPU, where torch keeps no allocator
  statistics, the allocation and release events of ``torch.profiler`` (``profile_memory``),
  summed in time order (:func:`kw_mm.analysis.measure.peak_memory`): the bytes torch's CPU
  allocator handed out, the same quantity as on CUDA, without the process's other memory
  (interpreter, libraries), which the peak RSS would add.

The total is persistent + step peak. It leaves out what a GPU process adds whatever the model
(the CUDA context and the caching allocator's reserve, several hundred MB), which the paper's
figures (Table 16, measured on GPUs) include.

KW layers plan their kernel assembly for the device they run on (on the CPU in cache-sized
blocks). ``plan_device='cuda'`` measures on this CPU the plan a GPU uses, through
``kw_mm.cnn.plan.planning_as`` where the installed kw_mm has it; the result says which plan was
measured (:attr:`MemoryResult.plan`).
"""
import contextlib
import importlib
import math
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, Optional, Sequence, Tuple

import torch

MB = 2**20

#: Paper Table 16 (MB per GPU): (training, inference) and the batches they were measured at;
#: keyed by the config name of the model.
PAPER_TABLE16: Dict[str, Tuple[int, int]] = {
    'resnet50_8xb512-300e_in1k': (11084, 1249),
    'dyconv4x-resnet50_8xb512-300e_in1k': (24552, 2062),
    'odconv4x-resnet50_8xb512-300e_in1k': (31892, 5405),
    'kw1d2x-resnet50_8xb512-300e_in1k': (23323, 2121),
    'kw1x-resnet50_8xb512-300e_in1k': (23231, 2200),
    'kw4x-resnet50_8xb512-300e_in1k': (24905, 2762),
    'mobilenet-v2_8xb32-150e_in1k': (2486, 1083),
    'dyconv4x-mobilenet-v2_8xb32-150e_in1k': (2924, 1151),
    'odconv4x-mobilenet-v2_8xb32-150e_in1k': (4212, 1323),
    'kw1d2x-mobilenet-v2_8xb32-150e_in1k': (3002, 1076),
    'kw1x-mobilenet-v2_8xb32-150e_in1k': (2823, 1096),
    'kw4x-mobilenet-v2_8xb32-150e_in1k': (2916, 1144),
}
#: The per-GPU batches of Table 16: training (ResNet50 128, MobileNetV2 32), inference 100.
PAPER_TRAIN_BATCH = {'resnet50': 128, 'mobilenet-v2': 32}
PAPER_EVAL_BATCH = 100
#: The plain model each row of Table 16 is compared with.
PAPER_PLAIN = {'resnet50': 'resnet50_8xb512-300e_in1k',
               'mobilenet-v2': 'mobilenet-v2_8xb32-150e_in1k'}
#: The rows of Table 16, as config files.
TABLE16_CONFIGS = tuple(f'configs/{name}.py' for name in PAPER_TABLE16)


def paper_family(name: str) -> Optional[str]:
    """``'resnet50'`` or ``'mobilenet-v2'`` for a Table 16 row, else None."""
    if name not in PAPER_TABLE16:
        return None
    return 'resnet50' if 'resnet50' in name else 'mobilenet-v2'


def planning_context(plan_device: str, measure_device: str) -> Tuple[ContextManager, str]:
    """The context under which KW layers plan as ``plan_device`` would, and its description.

    Measured on the device itself, the layers plan for it. Otherwise
    ``kw_mm.cnn.plan.planning_as(plan_device)`` is used where it exists; without it the
    layers keep the plan of the device they run on, and the description says so.
    """
    if plan_device == measure_device:
        return contextlib.nullcontext(), f'{plan_device} plan'
    try:
        plan = importlib.import_module('kw_mm.cnn.plan')
        planning_as: Callable[[str], ContextManager] = plan.planning_as
    except (ImportError, AttributeError):
        return contextlib.nullcontext(), (f'{measure_device} plan (kw_mm.cnn.plan.planning_as is '
                                          f'not available: the {plan_device} plan could not be '
                                          'measured)')
    return planning_as(plan_device), f'{plan_device} plan, measured on {measure_device}'


@dataclass
class LinearFit:
    """``bytes(batch) = fixed + per_sample * batch``."""
    fixed: float
    per_sample: float

    @classmethod
    def through(cls, points: Dict[int, float]) -> 'LinearFit':
        (b1, m1), (b2, m2) = sorted(points.items())[:2]
        per_sample = max(0.0, (m2 - m1) / (b2 - b1))
        return cls(m1 - per_sample * b1, per_sample)

    def at(self, batch: int) -> float:
        return self.fixed + self.per_sample * batch

    def largest_batch(self, budget: float) -> int:
        """The largest batch whose bytes fit ``budget`` (0 if none)."""
        if self.per_sample <= 0:
            return 0 if self.fixed > budget else 10**9
        return max(0, int(math.floor((budget - self.fixed) / self.per_sample)))


@dataclass
class MemoryResult:
    """Measured bytes of one model and the fits through them."""
    name: str
    params: int
    plan: str
    device: str
    persistent: Dict[str, float] = field(default_factory=dict)  # train / eval -> bytes
    peaks: Dict[str, Dict[int, float]] = field(default_factory=dict)  # train / eval -> batch
    fits: Dict[str, LinearFit] = field(default_factory=dict)  # totals, train / eval

    def total(self, mode: str, batch: int) -> float:
        """Estimated bytes (persistent + step peak) of ``mode`` at ``batch``."""
        return self.fits[mode].at(batch)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(_tensor_bytes(state.values()) for state in optimizer.state.values())


def _samples(batch: int, num_classes: int):
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % num_classes) for i in range(batch)]


def measure_memory(config: str, batches: Sequence[int] = (2, 4), size: int = 224,
                   device: str = 'cpu', plan_device: Optional[str] = None,
                   log: Callable[[str], None] = print) -> MemoryResult:
    """Measure a classification config's memory at two batches and fit the lines.

    Args:
        config (str): An mmpretrain config file.
        batches (Sequence[int]): Two batch sizes to measure. Defaults to (2, 4).
        size (int): Input side. Defaults to 224.
        device (str): Where to measure (``'cpu'`` or ``'cuda'``). Defaults to ``'cpu'``.
        plan_device (str, optional): Whose kernel plan the KW layers use (see
            :func:`planning_context`). Defaults to ``device``.
        log (Callable): Progress lines. Defaults to print.
    """
    import os.path as osp

    from kw_mm.analysis.contestants import build_optimizer, calibrate_norms, load_spec
    from kw_mm.analysis.measure import clear_memory, peak_memory
    from kw_mm.apis import build_model
    if len(set(batches)) != 2 or min(batches) < 1:
        raise ValueError(f'batches must be two different positive sizes, got {list(batches)}')
    spec = load_spec(config)
    torch.manual_seed(0)
    model = build_model(spec.cfg).to(device)
    dev = torch.device(device)
    context, plan = planning_context(plan_device or dev.type, dev.type)
    num_classes = int(getattr(getattr(model, 'head', None), 'num_classes', 1000) or 1000)
    result = MemoryResult(osp.splitext(osp.basename(config))[0],
                          sum(p.numel() for p in model.parameters()), plan, device)
    optimizer = build_optimizer(model, spec)
    gen = torch.Generator().manual_seed(0)
    with context:
        calibrate_norms(model, torch.randn(min(batches), 3, size, size, generator=gen).to(dev))
        for mode in ('train', 'eval'):
            result.peaks[mode] = {}
        for batch in sorted(batches):
            inputs = torch.randn(batch, 3, size, size, generator=gen).to(dev)
            samples = _samples(batch, num_classes)

            def train_step() -> None:
                model.train()
                optimizer.zero_grad(set_to_none=True)
                losses = model(inputs, samples, mode='loss')
                sum(v for k, v in losses.items() if 'loss' in k).backward()
                optimizer.step()

            def eval_step() -> None:
                model.eval()
                with torch.inference_mode():
                    model(inputs, mode='tensor')

            for mode, step in (('train', train_step), ('eval', eval_step)):
                step()  # the optimizer state exists, caches are filled
                optimizer.zero_grad(set_to_none=True)  # freed outside the measured step
                clear_memory()
                result.peaks[mode][batch] = float(peak_memory(step, dev))
                optimizer.zero_grad(set_to_none=True)
                log(f'  {result.name}: {mode} batch {batch}: step peak '
                    f'{result.peaks[mode][batch] / MB:.0f} MB')
    weights = _tensor_bytes(list(model.parameters()) + list(model.buffers()))
    result.persistent = dict(train=float(weights + _optimizer_bytes(optimizer)),
                             eval=float(weights))
    for mode in ('train', 'eval'):
        points = {b: result.persistent[mode] + p for b, p in result.peaks[mode].items()}
        result.fits[mode] = LinearFit.through(points)
    return result


def parse_memory(text: str) -> float:
    """Bytes of ``'24GB'``, ``'24576MB'``, ``'24GiB'`` or a number of GB (``'24'``)."""
    units = {'gib': 2**30, 'gb': 2**30, 'g': 2**30, 'mib': MB, 'mb': MB, 'm': MB}
    value = text.strip().lower()
    for unit, scale in units.items():
        if value.endswith(unit):
            number = value[:-len(unit)]
            break
    else:
        number, scale = value, 2**30
    try:
        amount = float(number)
    except ValueError:
        amount = -1
    if not amount > 0:
        raise ValueError(f'--gpu-memory must be a size such as 24GB, 24576MB or 24, got {text!r}')
    return amount * scale


def fit_verdict(result: MemoryResult, batch: int, gpu_bytes: float, accumulation: int = 1
                ) -> Optional[str]:
    """None if a training step at ``batch`` fits ``gpu_bytes``; else one line saying by how
    much it does not and which per-GPU batch with accumulation keeps the total batch."""
    need = result.total('train', batch)
    if need <= gpu_bytes:
        return None
    largest = result.fits['train'].largest_batch(gpu_bytes)
    advice = 'no batch fits' if largest < 1 else f'the largest batch that fits is {largest}'
    split = next((k for k in (2, 4, 8, 16, 32, 64) if batch % k == 0 and batch // k <= largest),
                 None)
    override = (f'; keep the total batch with --cfg-options train_dataloader.batch_size='
                f'{batch // split} optim_wrapper.accumulative_counts={split * accumulation}'
                if split else '')
    return (f'{result.name}: batch {batch} per GPU does not fit a {gpu_bytes / MB:,.0f} MB GPU: '
            f'it needs about {need / MB:,.0f} MB, {(need - gpu_bytes) / MB:,.0f} MB more; '
            f'{advice}{override}')


def ratio(value: float, plain: Optional[float]) -> str:
    return f'{value / plain:.2f}x' if plain else '-'


def format_table(results: Sequence[MemoryResult], config_batches: Dict[str, int],
                 eval_batch: int = PAPER_EVAL_BATCH, header: str = '',
                 markdown: bool = False) -> str:
    """The estimates beside Table 16: MB at the paper's batches, ratios to the plain model of
    the same family (the first plain model measured), and MB at the config's batch."""
    plains = {}
    for r in results:
        family = paper_family(r.name)
        if family and PAPER_PLAIN[family] == r.name:
            plains[family] = r
    columns = ['model', 'params', 'train batch', 'train MB', 'x plain', 'paper MB',
               'paper x plain', f'eval MB (b{eval_batch})', 'x plain', 'paper MB',
               'paper x plain', 'config batch', 'train MB at it']
    rows = []
    for r in results:
        family = paper_family(r.name)
        batch = PAPER_TRAIN_BATCH.get(family, config_batches.get(r.name, 0))
        plain = plains.get(family)
        paper = PAPER_TABLE16.get(r.name)
        paper_plain = PAPER_TABLE16.get(PAPER_PLAIN[family]) if family else None
        train, evals = r.total('train', batch) / MB, r.total('eval', eval_batch) / MB
        rows.append([
            r.name, f'{r.params / 1e6:.2f}M', str(batch), f'{train:,.0f}',
            ratio(train, plain.total('train', batch) / MB if plain else None),
            f'{paper[0]:,}' if paper else '-',
            ratio(paper[0], paper_plain[0]) if paper and paper_plain else '-',
            f'{evals:,.0f}',
            ratio(evals, plain.total('eval', eval_batch) / MB if plain else None),
            f'{paper[1]:,}' if paper else '-',
            ratio(paper[1], paper_plain[1]) if paper and paper_plain else '-',
            str(config_batches.get(r.name, '-')),
            f'{r.total("train", config_batches[r.name]) / MB:,.0f}'
            if r.name in config_batches else '-'])
    if markdown:
        lines = [header, ''] if header else []
        lines.append('| ' + ' | '.join(columns) + ' |')
        lines.append('|' + '|'.join('---' for _ in columns) + '|')
        lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
        return '\n'.join(lines)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = [header] if header else []
    lines.append('  '.join(c.rjust(w) if i else c.ljust(w)
                           for i, (c, w) in enumerate(zip(columns, widths))))
    for row in rows:
        lines.append('  '.join(v.rjust(w) if i else v.ljust(w)
                               for i, (v, w) in enumerate(zip(row, widths))))
    return '\n'.join(lines)


# ------------------------------------------------------------------------------ config notes
#: First line of the memory note a config carries (:func:`annotate_config` writes it).
CONFIG_NOTE_HEAD = ('# Memory per GPU, training step (`tools/analysis/memory.py CONFIG '
                    '--device cuda`):')
#: The per-GPU batch of the override the 300-epoch configs recommend for smaller GPUs (the
#: paper's Table 16 batch).
SMALL_GPU_BATCH = 128


def config_note(result: MemoryResult, batch: int) -> str:
    """The comment lines stating a config's training memory per GPU: at its own batch and,
    when that is larger, at :data:`SMALL_GPU_BATCH` (the override for smaller GPUs)."""
    gb = 2**30
    text = (f'#   {result.total("train", batch) / gb:.1f} GB at this config\'s {batch} images '
            'per GPU')
    if batch > SMALL_GPU_BATCH:
        text += f'; {result.total("train", SMALL_GPU_BATCH) / gb:.1f} GB at {SMALL_GPU_BATCH}'
    return f'{CONFIG_NOTE_HEAD}\n{text}\n#   ({result.plan}, tensors only).'


def annotate_config(path: str, note: str) -> None:
    """Write ``note`` into the config file at ``path``: in place of its current memory note
    (:data:`CONFIG_NOTE_HEAD` and the indented comment lines after it), else at its end."""
    with open(path) as f:
        lines = f.read().splitlines()
    try:
        start = lines.index(CONFIG_NOTE_HEAD)
    except ValueError:
        lines += [''] + note.splitlines()
    else:
        end = start + 1
        while end < len(lines) and lines[end].startswith('#   '):
            end += 1
        lines[start:end] = note.splitlines()
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
