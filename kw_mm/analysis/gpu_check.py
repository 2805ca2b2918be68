"""The GPU check (``tools/analysis/gpu_check.py``, ``make gpu-check``): what a first run on a
CUDA device must show, in one table.

(a) every KW layer path (each forced with ``use_kw_impl(path)``) and every backbone on the
    device against the CPU oracle (the straightforward implementation,
    ``use_kw_impl('reference')``, in float32 on the CPU):
    relative error (``|a - b| / |b|`` over the whole tensor) below :data:`ORACLE_TOLERANCE`;
(b) a training step of every KW backbone in float32 and under autocast in float16 (with a
    gradient scaler) and bfloat16: finite loss and gradients, and the cosine between the AMP
    and the float32 gradients;
(c) the paper's Table 12 side by side: images per second at batch 100, 224x224, of ResNet50 /
    DY-Conv / ODConv / KW 1/2x, 1x, 4x and the MobileNetV2 rows, with the ratios to the plain
    model beside the paper's (an NVIDIA TITAN X);
(d) the paper's Table 16: training and inference memory per GPU
    (:func:`kw_mm.analysis.memory.measure_memory`: ``torch.cuda.max_memory_allocated`` on CUDA)
    beside the paper's.

Nothing here assumes a device: ``device='cpu'`` runs the same code on the CPU (with
``quick=True`` on tiny shapes and a few models, which the test suite does).
"""
import copy
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

#: Relative error allowed against the CPU oracle in float32.
ORACLE_TOLERANCE = 1e-4
#: Paper Table 12: images per second at batch 100, 224x224 (NVIDIA TITAN X).
PAPER_TABLE12_FPS: Dict[str, float] = {
    'resnet50_8xb512-300e_in1k': 647.0,
    'dyconv4x-resnet50_8xb512-300e_in1k': 322.7,
    'odconv4x-resnet50_8xb512-300e_in1k': 142.3,
    'kw1d2x-resnet50_8xb512-300e_in1k': 227.8,
    'kw1x-resnet50_8xb512-300e_in1k': 265.4,
    'kw4x-resnet50_8xb512-300e_in1k': 191.1,
    'mobilenet-v2_8xb32-150e_in1k': 1410.8,
    'dyconv4x-mobilenet-v2_8xb32-150e_in1k': 862.4,
    'odconv4x-mobilenet-v2_8xb32-150e_in1k': 536.5,
    'kw1d2x-mobilenet-v2_8xb32-150e_in1k': 926.0,
    'kw1x-mobilenet-v2_8xb32-150e_in1k': 798.7,
    'kw4x-mobilenet-v2_8xb32-150e_in1k': 786.9,
}
TABLE12_GROUPS = (
    tuple(f'configs/{n}.py' for n in PAPER_TABLE12_FPS if 'resnet50' in n),
    tuple(f'configs/{n}.py' for n in PAPER_TABLE12_FPS if 'mobilenet' in n),
)
QUICK_TABLE_GROUPS = (
    ('configs/resnet50_8xb512-300e_in1k.py', 'configs/kw1x-resnet50_8xb512-300e_in1k.py'),
    ('configs/mobilenet-v2_8xb32-150e_in1k.py', 'configs/kw1x-mobilenet-v2_8xb32-150e_in1k.py'),
)

#: Every backbone of (a) (KW and the rivals) and of (b) (KW only): config, and the model
#: options of the tiny run (``quick``).
BACKBONES = (
    ('configs/kw1x-resnet18_8xb32_in1k.py', {}),
    ('configs/kw4x-resnet18_8xb32_in1k.py', {}),
    ('configs/kw1d2x-resnet50_8xb512-300e_in1k.py', {}),
    ('configs/kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k.py', {}),
    ('configs/kwstar4x-mobilenet-v2_8xb32-150e_in1k.py', {}),
    ('configs/kw1x-convnext-tiny_8xb512-300e_in1k.py', {}),
    ('configs/kw1x-deit-tiny_4xb256_in1k.py', dict(backbone=dict(img_size=32))),
    ('configs/dyconv4x-resnet18_8xb32_in1k.py', {}),
    ('configs/odconv4x-resnet18_8xb32_in1k.py', {}),
    ('configs/condconv8x-resnet18_8xb32_in1k.py', {}),
)
QUICK_BACKBONES = ('kw1x-resnet18_8xb32_in1k', 'kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k',
                   'kwstar4x-mobilenet-v2_8xb32-150e_in1k', 'kw1x-deit-tiny_4xb256_in1k',
                   'odconv4x-resnet18_8xb32_in1k')

#: KW layers of every kind (each runs through every path that applies to it): in, out,
#: kernel, stride, groups, bias, budget, dimensions, input side, batch.
LAYER_CASES = (
    (32, 64, 3, 1, 1, False, 1.0, 2, 28, 2),   # 3x3 on a large map
    (64, 64, 3, 1, 1, False, 1.0, 2, 7, 4),    # 3x3 on a small map (im2col, transposed eval)
    (32, 64, 3, 2, 1, True, 4.0, 2, 14, 2),    # strided, bias, budget 4
    (64, 128, 1, 1, 1, False, 1.0, 2, 14, 2),  # point-wise
    (32, 32, 3, 1, 32, False, 1.0, 2, 14, 2),  # depth-wise
    (16, 32, 3, 1, 1, False, 0.5, 1, 32, 2),   # 1-d
    (8, 16, 3, 1, 1, False, 1.0, 3, 6, 2),     # 3-d
)


@dataclass
class Row:
    """One line of the check's table."""
    part: str
    subject: str
    measured: str
    reference: str = ''
    ok: Optional[bool] = None  # None: a figure, not a check

    @property
    def verdict(self) -> str:
        return '' if self.ok is None else ('ok' if self.ok else 'FAIL')


def relative_error(value: torch.Tensor, oracle: torch.Tensor) -> float:
    """``|value - oracle| / |oracle|`` (Frobenius norms), on the CPU in float64."""
    a, b = value.detach().double().cpu(), oracle.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_layers(device: torch.device, quick: bool) -> List[Row]:
    """(a) Every layer case on ``device``, through every path of the fast implementation that
    applies to it (:data:`kw_mm.cnn.plan.PATHS`, forced with ``use_kw_impl(path)``), against
    the CPU oracle: the training output and every gradient (paths that train), then the
    inference output."""
    from kw_mm.analysis.benchmark import make_kw_layer
    from kw_mm.cnn.fast import use_kw_impl
    from kw_mm.cnn.plan import PATHS, applies
    rows = []
    for case in LAYER_CASES:
        cin, cout, k, stride, groups, bias, budget, dim, side, batch = case
        if quick:
            side = min(side, 8)
        torch.manual_seed(0)
        oracle, _ = make_kw_layer(cin, cout, k, stride, groups, bias, budget, dim)
        x = torch.randn(batch, cin, *([side] * dim))
        for path in PATHS:
            modes = [m for m in ('train', 'eval')
                     if applies(path, oracle.layer.geometry, needs_grad=m == 'train')]
            if not modes:
                continue
            reference = copy.deepcopy(oracle)
            tested = copy.deepcopy(oracle).to(device)
            errors = []
            for mode in modes:
                outs = {}
                for key, net, impl, inp in (('oracle', reference, 'reference', x.clone()),
                                            ('tested', tested, path, x.clone().to(device))):
                    net.train(mode == 'train')
                    inp.requires_grad_(mode == 'train')
                    with use_kw_impl(impl):
                        if mode == 'train':
                            out = net.layer(inp)
                            out.backward(torch.linspace(-1, 1, out.numel()).view_as(out)
                                         .to(out.device))
                            grads = [inp.grad] + [p.grad for p in net.parameters()]
                            net.zero_grad(set_to_none=True)
                        else:
                            with torch.no_grad():
                                out = net.layer(inp)
                            grads = []
                    outs[key] = [out] + grads
                errors += [relative_error(t, o) for t, o in zip(outs['tested'], outs['oracle'])
                           if o is not None]
            worst = max(errors)
            rows.append(Row('a', f'KW conv{dim}d {cin}->{cout} k{k} s{stride} g{groups} '
                            f'b{budget:g} at {side}^{dim} x{batch}, path {path} '
                            f'({" + ".join(modes)})', f'rel err {worst:.1e}',
                            f'< {ORACLE_TOLERANCE:g}', worst < ORACLE_TOLERANCE))
    return rows


def _build(config: str, quick_options: dict, quick: bool) -> nn.Module:
    from kw_mm.analysis.contestants import load_spec
    from kw_mm.apis import build_model
    from mmengine.config import Config
    spec = load_spec(config)
    cfg = spec.cfg
    if quick and quick_options:
        cfg = Config(dict(model=cfg))
        cfg.merge_from_dict(dict(model=quick_options))
        cfg = cfg.model.to_dict()
    torch.manual_seed(0)
    return build_model(cfg)


def _name(config: str) -> str:
    return config.rsplit('/', 1)[-1][:-3]


def _blocks(model: nn.Module) -> Dict[str, nn.Module]:
    """The backbone's blocks (modules two levels below it: ``layer1.0``, ``layers.3``,
    ``stages.2``) and its direct children that have no such blocks (the stem), by name."""
    backbone = model.backbone
    blocks = {}
    for name, child in backbone.named_children():
        grand = dict(child.named_children())
        if grand and not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                             for m in grand.values()):
            blocks.update({f'{name}.{k}': m for k, m in grand.items()})
        else:
            blocks[name] = child
    return blocks


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    return value


def check_backbones(device: torch.device, quick: bool, size: int, batch: int) -> List[Row]:
    """(a) Every backbone on ``device`` (fast) against the CPU oracle, block by block: each
    block gets the oracle's input of that block, so the worst block error is the error of
    the implementation, not of a randomly initialized network, whose blocks multiply a
    rounding difference by about 2 each (a whole KW MobileNetV2 compared end to end would
    show the summation order of float32, amplified)."""
    from kw_mm.analysis.contestants import calibrate_norms, is_kw_model
    from kw_mm.cnn.fast import use_kw_impl
    rows = []
    for config, options in BACKBONES:
        if quick and _name(config) not in QUICK_BACKBONES:
            continue
        oracle = _build(config, options, quick)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        calibrate_norms(oracle, x)
        tested = copy.deepcopy(oracle).to(device).eval()
        oracle.eval()
        blocks = _blocks(oracle)
        tested_blocks = _blocks(tested)
        seen: Dict[str, tuple] = {}

        def record(name: str):
            def hook(module: nn.Module, args: tuple, out) -> None:
                # copies: a later in-place operation (ReLU) may change the output
                if name not in seen:
                    seen[name] = tuple(_clone(a) for a in args), _clone(out)
            return hook

        hooks = [m.register_forward_hook(record(name)) for name, m in blocks.items()]
        with torch.no_grad(), use_kw_impl('reference'):
            oracle(x, mode='tensor')
        for hook in hooks:
            hook.remove()
        worst, where = 0.0, ''
        with torch.no_grad(), use_kw_impl('fast'):
            for name, (args, expected) in seen.items():
                got = tested_blocks[name](*[a.to(device) if isinstance(a, torch.Tensor) else a
                                            for a in args])
                pairs = zip(got, expected) if isinstance(expected, (tuple, list)) else \
                    [(got, expected)]
                for g, e in pairs:
                    error = relative_error(g, e)
                    if error >= worst:
                        worst, where = error, name
        kind = 'KW' if is_kw_model(oracle) else 'rival'
        rows.append(Row('a', f'{_name(config)} ({kind}) eval at {size}px x{batch}, '
                        f'{len(seen)} blocks', f'worst block rel err {worst:.1e} ({where})',
                        f'< {ORACLE_TOLERANCE:g}', worst < ORACLE_TOLERANCE))
    return rows


def _train_step(model: nn.Module, x: torch.Tensor, dtype: Optional[torch.dtype]
                ) -> Dict[str, object]:
    """One training step's loss and gradients (float32, or autocast to ``dtype``)."""
    from kw_mm.analysis.contestants import _data_samples
    device = x.device
    samples = _data_samples(x.shape[0])
    model.train()
    model.zero_grad(set_to_none=True)
    # float16: the gradient scaler of AMP training, which skips a step whose scaled gradients
    # overflow and halves its scale; the step is repeated until one is taken (or 20 skips).
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    state = copy.deepcopy(model.state_dict())
    for skipped in range(20):
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # the same drop-path draws in every try
        context = torch.autocast(device.type, dtype=dtype) if dtype is not None else \
            torch.autocast(device.type, enabled=False)
        with context:
            losses = model(x, samples, mode='loss')
            loss = sum(v for k, v in losses.items() if 'loss' in k)
        (scaler.scale(loss) if scaler else loss).backward()
        scale = float(scaler.get_scale()) if scaler else 1.0
        flat = torch.cat([p.grad.detach().float().flatten() / scale
                          for p in model.parameters() if p.grad is not None])
        if scaler is None or bool(torch.isfinite(flat).all()):
            break
        scaler.update(scale / 2)
    return dict(loss=float(loss.detach().float()), grad=flat, skipped=skipped)


def _training_rows(model: nn.Module, subject: str, x: torch.Tensor) -> List[Row]:
    """A training step of ``model`` (on ``x``'s device) in float32, float16 and bfloat16 from
    the same weights: finite loss and gradients, and each AMP gradient's cosine to float32."""
    state = copy.deepcopy(model.state_dict())
    results = {}
    for label, dtype in (('fp32', None), ('fp16', torch.float16), ('bf16', torch.bfloat16)):
        model.load_state_dict(state)
        torch.manual_seed(2)  # the same drop-path draws
        try:
            results[label] = _train_step(model, x, dtype)
        except Exception as err:  # noqa: BLE001 - reported as a failed row
            results[label] = dict(error=f'{type(err).__name__}: {err}'[:120])
    model.load_state_dict(state)
    base, rows = results['fp32'], []
    for label, result in results.items():
        if 'error' in result:
            rows.append(Row('b', f'{subject} train step {label}', result['error'], ok=False))
            continue
        finite = math.isfinite(result['loss']) and bool(torch.isfinite(result['grad']).all())
        measured = f"loss {result['loss']:.4f}"
        if result.get('skipped'):
            measured += f", {result['skipped']} overflowing steps skipped by the scaler"
        if label != 'fp32' and 'grad' in base:
            cosine = float(torch.nn.functional.cosine_similarity(
                result['grad'].double(), base['grad'].double(), dim=0))
            measured += f', grad cosine to fp32 {cosine:.3f}'
        rows.append(Row('b', f'{subject} train step {label} at {x.shape[-1]}px x{x.shape[0]}',
                        measured, 'finite loss and gradients', finite))
    return rows


def check_training(device: torch.device, quick: bool, size: int, batch: int) -> List[Row]:
    """(b) A training step of every KW backbone in float32, float16 and bfloat16, at t = 0.5
    on BatchNorm statistics of its input (a freshly built network)."""
    from kw_mm.analysis.contestants import calibrate_norms, is_kw_model
    from kw_mm.cnn import set_temperature
    rows = []
    for config, options in BACKBONES:
        if quick and _name(config) not in QUICK_BACKBONES:
            continue
        model = _build(config, options, quick)
        if not is_kw_model(model):
            continue
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
        calibrate_norms(model, x)
        model = model.to(device)
        set_temperature(model, 0.5)
        rows += _training_rows(model, _name(config), x.to(device))
    return rows


def check_trained(device: torch.device, checkpoints: Sequence[Tuple[str, str]], size: int,
                  batch: int) -> List[Row]:
    """(b) for trained weights: the training step of each ``(config, checkpoint)`` (a kw_mm or
    mmpretrain checkpoint of that config's model, loaded strictly; a KW model at t = 0, where
    a trained model runs) in float32, float16 and bfloat16. Give a KW model and its plain
    twin to compare what AMP keeps of their gradients on trained weights (what the CPU tests
    cannot: tests/test_engine/test_amp_training.py)."""
    from mmengine.runner import load_checkpoint

    from kw_mm.cnn import set_temperature
    rows = []
    for config, checkpoint in checkpoints:
        model = _build(config, {}, False)
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
        set_temperature(model, 0.0)
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
        rows += _training_rows(model.to(device), f'{_name(config)} ({checkpoint})',
                               x.to(device))
    return rows


def check_speed(device: torch.device, quick: bool, size: int, batch: int, reps: int
                ) -> List[Row]:
    """(c) Table 12 side by side: images per second and the ratio to the plain model."""
    from kw_mm.analysis.benchmark import benchmark_side_by_side
    rows = []
    for group in (QUICK_TABLE_GROUPS if quick else TABLE12_GROUPS):
        result = benchmark_side_by_side(list(group), batch=batch, size=size, reps=reps,
                                        warmup=1, metrics=('eval_bN', ), memory=False,
                                        device=str(device), log=lambda text: None)
        plain_ms = result.times_ms['eval_bN'][result.plain]
        paper_plain = PAPER_TABLE12_FPS.get(result.plain)
        for name in result.names:
            ms = result.times_ms['eval_bN'][name]
            paper = PAPER_TABLE12_FPS.get(name)
            ratio = 1.0 / result.ratios['eval_bN'][name]
            reference = f'{paper:,.1f} img/s ({paper / paper_plain:.2f}x)' \
                if paper and paper_plain else ''
            rows.append(Row('c', f'{name} eval b{batch} at {size}px',
                            f'{batch * 1000 / ms:,.1f} img/s ({ratio:.2f}x plain; '
                            f'{plain_ms:.0f} ms plain)', reference))
    return rows


def check_memory(device: torch.device, quick: bool, size: int) -> List[Row]:
    """(d) Table 16: training and inference memory per GPU beside the paper's."""
    from kw_mm.analysis.memory import (MB, PAPER_EVAL_BATCH, PAPER_PLAIN, PAPER_TABLE16,
                                       PAPER_TRAIN_BATCH, measure_memory, paper_family)
    rows = []
    for group in (QUICK_TABLE_GROUPS if quick else TABLE12_GROUPS):
        plain = None
        for config in group:
            name = _name(config)
            family = paper_family(name)
            train_batch = 4 if quick else PAPER_TRAIN_BATCH[family]
            eval_batch = 4 if quick else PAPER_EVAL_BATCH
            result = measure_memory(config, (2, 3) if quick else (train_batch // 2,
                                                                  train_batch),
                                    size, str(device), log=lambda text: None)
            train = result.total('train', train_batch) / MB
            evals = result.total('eval', eval_batch) / MB
            if name == PAPER_PLAIN[family]:
                plain = (train, evals)
            paper, paper_plain = PAPER_TABLE16[name], PAPER_TABLE16[PAPER_PLAIN[family]]
            ratios = (f' ({train / plain[0]:.2f}x / {evals / plain[1]:.2f}x plain)'
                      if plain else '')
            rows.append(Row('d', f'{name} train b{train_batch} / eval b{eval_batch} at '
                            f'{size}px', f'{train:,.0f} / {evals:,.0f} MB{ratios}',
                            f'{paper[0]:,} / {paper[1]:,} MB ({paper[0] / paper_plain[0]:.2f}x'
                            f' / {paper[1] / paper_plain[1]:.2f}x)'))
    return rows


def device_header(device: torch.device) -> str:
    """GPU model (or CPU), torch and CUDA versions."""
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
    else:
        from kw_mm.cnn.cpu_caches import cpu_model
        name = f'CPU {cpu_model()}, {torch.get_num_threads()} threads'
    return (f'{name}; torch {torch.__version__}; CUDA {torch.version.cuda or "-"}; '
            f'cuDNN {torch.backends.cudnn.version() or "-"}')


def run_checks(device: torch.device, quick: bool, parts: Sequence[str] = 'abcd',
               log: Callable[[str], None] = print,
               checkpoints: Sequence[Tuple[str, str]] = ()) -> List[Row]:
    """Run the parts of the check on ``device``; float32 products stay float32 (no TF32).
    ``checkpoints`` (``(config, checkpoint)`` pairs) add part (b)'s steps on trained weights
    (:func:`check_trained`)."""
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    size, batch = (32, 2) if quick else (224, 100)
    rows: List[Row] = []

    def trained() -> List[Row]:
        return check_trained(device, checkpoints, size, 2 if quick else 16)

    steps = (('a', 'KW layer paths against the CPU oracle', lambda: check_layers(device, quick)),
             ('a', 'backbones against the CPU oracle',
              lambda: check_backbones(device, quick, size, 2 if quick else 8)),
             ('b', 'training steps fp32 / fp16 / bf16',
              lambda: check_training(device, quick, size, 2 if quick else 16)),
             ('b', 'training steps on trained weights', trained),
             ('c', 'Table 12 speed', lambda: check_speed(device, quick, size, batch,
                                                         1 if quick else 10)),
             ('d', 'Table 16 memory', lambda: check_memory(device, quick, size)))
    for part, what, step in steps:
        if part not in parts or (step is trained and not checkpoints):
            continue
        start = time.perf_counter()
        log(f'({part}) {what} ...')
        rows += step()
        log(f'({part}) {what}: {time.perf_counter() - start:.0f} s')
    return rows


def format_rows(rows: Sequence[Row], header: str, markdown: bool = False) -> str:
    """One table of every row, headed by the device."""
    columns = ('part', 'what', 'measured', 'paper / limit', 'verdict')
    table = [(r.part, r.subject, r.measured, r.reference, r.verdict) for r in rows]
    if markdown:
        lines = [header, '', '| ' + ' | '.join(columns) + ' |',
                 '|' + '|'.join('---' for _ in columns) + '|']
        return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in table])
    widths = [max([len(c)] + [len(row[i]) for row in table]) for i, c in enumerate(columns)]
    lines = [header, '  '.join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ['  '.join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table]
    return '\n'.join(lines)
