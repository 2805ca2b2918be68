"""What the benchmarks run: models named by config or paper variant, built and prepared alike,
and the contestants that run them (a model and its eval and training steps).

A **contestant** is anything the benchmark can time: a name and two step factories,
:meth:`Contestant.eval_fn` and :meth:`Contestant.train_fn`, each returning a callable without
arguments that runs one step on given inputs. :class:`Contestant` runs a model eagerly in
PyTorch (optionally with another KW implementation, ``impl``). Another kind (a compiled model,
:class:`~kw_mm.analysis.compiled.CompiledContestant`, kind ``'compiled'``; an exported graph in
ONNX Runtime) is a subclass that overrides the steps (or sets ``trains = False`` when it has no
training step) and is registered in :data:`CONTESTANT_KINDS` with
:func:`register_contestant_kind`; :func:`make_contestant` builds one by kind, and
:func:`~kw_mm.analysis.benchmark.measure_contestants` times any mix of them side by side.
"""
import os.path as osp
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

from kw_mm.apis import build_model, get_model_index, load_config, model_config
from kw_mm.cnn import KWConvNd
from kw_mm.cnn.fast import use_kw_impl


# ----------------------------------------------------------------------------------- models
@dataclass
class ModelSpec:
    """A model to benchmark: an mmpretrain config file or a paper variant name."""

    name: str
    cfg: dict  # the model config
    source: str  # the config path or the variant name
    optim_cfg: Optional[dict] = None  # the config's optim_wrapper, if any


def _config_file(path: str) -> str:
    """``path``, or the installed config the model index names ``path`` (``configs/...``, as
    the presets do) when there is no such file here."""
    if osp.isfile(path):
        return path
    info = get_model_index().by_config(path)
    if info is not None and osp.normpath(info.config) == osp.normpath(path):
        return info.config_path
    raise FileNotFoundError(f'config {path!r} does not exist')


def load_spec(spec: str) -> ModelSpec:
    """A :class:`ModelSpec` from a config path (``*.py``) or a paper variant name."""
    if spec.endswith('.py'):
        cfg = load_config(_config_file(spec))
        if 'model' not in cfg:
            raise ValueError(f'config {spec!r} has no "model"')
        name = osp.splitext(osp.basename(spec))[0]
        optim = cfg.get('optim_wrapper')
        return ModelSpec(name, model_config(cfg), spec,
                         optim.to_dict() if hasattr(optim, 'to_dict') else optim)
    variants = get_model_index().variants
    if spec in variants:
        return ModelSpec(spec, variants[spec].model_cfg(), spec)
    raise ValueError(f'{spec!r} is neither a config file (*.py) nor a paper variant; '
                     f'variants: {sorted(variants)}')


def plain_twin(spec: str) -> str:
    """The plain model a KW model is compared with, as the model index names it.

    A config ``dir/kw1x-resnet18_8xb32_in1k.py`` has the twin ``dir/resnet18_8xb32_in1k.py``
    (the index's config if ``dir`` has no such file); a paper variant the baseline of its
    family (``kw4x_resnet18`` -> ``resnet18``).
    """
    index = get_model_index()
    if spec.endswith('.py'):
        info = index.by_config(spec)
        if info is None or info.plain_twin_name is None:
            raise ValueError(f'no plain twin found for {spec!r} (the model index names none); '
                             'give the pair explicitly as KW_CONFIG:PLAIN_CONFIG')
        twin = index.get_model(info.plain_twin_name)
        beside = osp.join(osp.dirname(spec), osp.basename(twin.config))
        return beside if osp.isfile(beside) else twin.config_path
    if spec in index.variants:
        return index.variants[spec].baseline.name
    raise ValueError(f'no plain twin for {spec!r}')


def parse_pair(text: str) -> Tuple[str, str]:
    """``KW[:PLAIN]`` -> (KW, PLAIN); PLAIN defaults to :func:`plain_twin`."""
    if ':' in text:
        kw, plain = text.split(':', 1)
        return kw, plain
    return text, plain_twin(text)


def build_spec(spec: ModelSpec) -> nn.Module:
    """Build ``spec`` (seeded) with :func:`kw_mm.apis.build_model`."""
    torch.manual_seed(0)
    # KW layers initialize themselves when their warehouses are allocated; init_weights()
    # (which the Runner calls) changes nothing that matters for speed.
    return build_model(spec.cfg)


def calibrate_norms(model: nn.Module, inputs: torch.Tensor, steps: int = 2) -> None:
    """Give every BatchNorm the running statistics of ``inputs`` (as training would).

    A freshly built network keeps BatchNorm's default statistics (mean 0, variance 1), so in
    eval mode its activations are not normalized: they shrink or grow layer by layer, and deep
    in a KW network the attention logits, hence the kernels (the CAF divides logits by
    ``|z|_1 + 1e-3``), become tiny and the convolutions produce denormal floats, which x86
    CPUs process several times slower (the benchmark's layer profile of an uncalibrated KW
    MobileNetV2 shows it in its depth-wise layers). A trained model has calibrated statistics;
    so do both contestants here: a few forward passes in train mode with a cumulative average
    (``momentum=None``), no gradients, parameters untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(inputs, mode='tensor')
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


def is_kw_model(model: nn.Module) -> bool:
    return any(isinstance(m, KWConvNd) for m in model.modules())


def build_optimizer(model: nn.Module, spec: ModelSpec) -> torch.optim.Optimizer:
    """The config's optimizer (type and arguments; no param-wise options), else SGD."""
    cfg = (spec.optim_cfg or {}).get('optimizer') if spec.optim_cfg else None
    if cfg:
        cfg = dict(cfg)
        cfg.pop('_scope_', None)  # set by mmengine on configs inheriting toolbox bases
        kind = cfg.pop('type')
        optim_cls = getattr(torch.optim, kind, None)
        if optim_cls is not None:
            return optim_cls(model.parameters(), **cfg)
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)


# ----------------------------------------------------------------------------------- contestants
def _data_samples(batch: int, num_classes: int = 1000) -> list:
    from mmpretrain.structures import DataSample
    return [DataSample().set_gt_label(i % num_classes) for i in range(batch)]


class Contestant:
    """A model run eagerly in PyTorch (or one implementation of a KW model), with its eval and
    training steps.

    Args:
        name (str): The name its times are reported under.
        model (nn.Module): An mmpretrain classifier (called with ``mode='tensor'`` /
            ``mode='loss'``).
        spec (ModelSpec): What it was built from (its optimizer config).
        impl (str, optional): The KW implementation it runs
            (:func:`~kw_mm.cnn.fast.use_kw_impl`, e.g. ``'reference'``). Defaults to none:
            the layers' own ``kw_impl`` (and any ``use_kw_impl`` block around the run).
        device (str): Defaults to ``'cpu'``.
    """

    #: The kind's name in :data:`CONTESTANT_KINDS`.
    kind = 'eager'
    #: Whether it has a training step (a graph exported for inference has none).
    trains = True

    def __init__(self, name: str, model: nn.Module, spec: ModelSpec,
                 impl: Optional[str] = None, device: str = 'cpu') -> None:
        self.name = name
        self.model = model.to(device)
        self.spec = spec
        self.impl = impl
        self.device = torch.device(device)
        self.optimizer = build_optimizer(self.model, spec)

    def _ctx(self):
        return (use_kw_impl(self.impl) if self.impl is not None and is_kw_model(self.model)
                else nullcontext())

    def _autocast(self):
        """The context the forward of a step runs in: none here (the AMP kind's autocast)."""
        return nullcontext()

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        """Backward of ``loss`` and the optimizer step (the AMP kind scales float16)."""
        loss.backward()
        self.optimizer.step()

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def forward(self) -> Callable:
        """What a step calls with the model's arguments: the model itself here; a kind that
        runs the same module another way (``torch.compile``) returns that instead."""
        return self.model

    def metric_fn(self, metric: str, inputs: Dict[int, torch.Tensor],
                  batch: int) -> Callable[[], None]:
        """The step of ``metric`` (``'eval_b1'``, ``'eval_bN'``, ``'train'``) on the images of
        its batch size (``inputs``: images by batch size; ``batch`` is ``N``)."""
        images = inputs[1 if metric == 'eval_b1' else batch]
        return (self.train_fn if metric == 'train' else self.eval_fn)(images)

    def eval_fn(self, inputs: torch.Tensor) -> Callable[[], None]:
        """One inference pass on ``inputs`` (``torch.inference_mode``, eval mode)."""
        model, forward = self.model, self.forward()

        def step() -> None:
            model.eval()
            with torch.inference_mode(), self._ctx(), self._autocast():
                forward(inputs, mode='tensor')
            self._sync()
        return step

    def train_fn(self, inputs: torch.Tensor) -> Callable[[], None]:
        """One training step on ``inputs``: forward with the loss, backward, optimizer step."""
        model, optimizer, forward = self.model, self.optimizer, self.forward()
        samples = _data_samples(inputs.shape[0])

        def step() -> None:
            model.train()
            with self._ctx():
                optimizer.zero_grad(set_to_none=True)
                with self._autocast():
                    losses = forward(inputs, samples, mode='loss')
                self._backward_and_step(sum(v for k, v in losses.items() if 'loss' in k))
            self._sync()
        return step

    def release_gradients(self) -> None:
        """Free the gradients (before a memory measurement: the profiler cannot see the
        release of memory allocated before it started)."""
        self.optimizer.zero_grad(set_to_none=True)


#: Kinds of contestant by name: ``factory(name, model, spec, device=..., **options)``.
CONTESTANT_KINDS: Dict[str, Callable[..., Contestant]] = {'eager': Contestant}


def register_contestant_kind(kind: str, factory: Callable[..., Contestant]) -> None:
    """Make ``kind`` available to :func:`make_contestant` (a :class:`Contestant` subclass or
    any callable with its arguments returning one)."""
    if kind in CONTESTANT_KINDS and CONTESTANT_KINDS[kind] is not factory:
        raise ValueError(f'contestant kind {kind!r} is already registered')
    CONTESTANT_KINDS[kind] = factory


def make_contestant(kind: str, name: str, model: nn.Module, spec: ModelSpec,
                    device: str = 'cpu', **options) -> Contestant:
    """A contestant of ``kind`` (a key of :data:`CONTESTANT_KINDS`) running ``model``."""
    if kind not in CONTESTANT_KINDS:
        raise ValueError(f'contestant kind must be one of {sorted(CONTESTANT_KINDS)}, '
                         f'got {kind!r}')
    return CONTESTANT_KINDS[kind](name, model, spec, device=device, **options)


# The kinds kw_mm ships register themselves (after everything above exists: they subclass
# Contestant).
from . import compiled  # noqa: E402,F401 ('compiled': torch.compile)
from . import amp  # noqa: E402,F401 ('amp': torch.autocast)
