"""Behaviour every KW backbone shares, run on small configurations of each family.

To cover another backbone add one ``Case`` to ``CASES`` (and its bad arguments to
``BAD_ARGUMENTS``): the KW backbone config, the plain mmpretrain backbone with the same static
architecture (the t = 1 oracle and the expected output shapes) and a small input size.
Backbones follow mmpretrain's conventions: ``out_indices`` / ``frozen_stages`` over
``num_stages`` stages, ``stage_modules(0)`` is the stem, module names equal to the plain
backbone's (plus ``warehouse_manager`` and the ``.attention`` of each KW layer).
"""
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from kw_mm import set_temperature
from kw_mm.cnn import KWAttention, KWConvNd


@dataclass(frozen=True)
class Case:
    """One small KW backbone.

    Attributes:
        name (str): Test id.
        cfg (dict): The KW backbone config (built with the mmpretrain registry).
        plain (dict): The plain mmpretrain backbone with the same static architecture.
        size (int): Input height and width (large enough for a batch of one in training).
        frozen_stages (int): The ``frozen_stages`` of the freezing test (>= 1, with KW layers).
        batch_norm (bool): The network has BatchNorms (the ``norm_eval`` test); ConvNeXt has
            only LayerNorms.
    """

    name: str
    cfg: dict
    plain: dict
    size: int = 64
    frozen_stages: int = 1
    batch_norm: bool = True


#: A small ConvNeXt (ConvNeXt-Tiny's depths and layout at 1/6 of the width, fewer blocks).
CONVNEXT = dict(depths=[2, 2, 3, 2], channels=[16, 32, 64, 128])

CASES: List[Case] = [
    Case('kw1x-resnet18', dict(type='kw_mm.KWResNet', depth=18, budget=1),
         dict(type='mmpretrain.ResNet', depth=18)),
    # Narrower ResNets (base_channels as mmpretrain's ResNet): the cost of a KW layer is
    # dominated by assembling kernels, which does not shrink with the input.
    Case('kw1d2x-resnet18-w32', dict(type='kw_mm.KWResNet', depth=18, budget=0.5,
                                     stem_channels=32, base_channels=32),
         dict(type='mmpretrain.ResNet', depth=18, stem_channels=32, base_channels=32)),
    Case('kw1d2x-resnet50-w16', dict(type='kw_mm.KWResNet', depth=50, budget=0.5,
                                     stem_channels=16, base_channels=16),
         dict(type='mmpretrain.ResNet', depth=50, stem_channels=16, base_channels=16)),
    Case('kw1x-convnext-release', dict(type='kw_mm.KWConvNeXt', arch=CONVNEXT, layout='release'),
         dict(type='mmpretrain.ConvNeXt', arch=CONVNEXT), size=32, batch_norm=False),
    Case('kw1x-mobilenet-v2-w0.5', dict(type='kw_mm.KWMobileNetV2', widen_factor=0.5, budget=1),
         dict(type='mmpretrain.MobileNetV2', widen_factor=0.5), frozen_stages=2),
    Case('kw1d2x-mobilenet-v2-w0.5', dict(type='kw_mm.KWMobileNetV2', widen_factor=0.5,
                                           budget=0.5),
         dict(type='mmpretrain.MobileNetV2', widen_factor=0.5), frozen_stages=2),
]

#: (KW backbone config, message the ValueError must contain); each names the value given.
BAD_ARGUMENTS: List[Tuple[dict, str]] = [
    (dict(type='kw_mm.KWResNet', depth=19),
     r'depth must be one of \[18, 34, 50, 101, 152\], got 19'),
    (dict(type='kw_mm.KWResNet', depth=18, budget=3),
     r'budget must be one of \[0.25, 0.5, 1, 2, 4\], got 3'),
    (dict(type='kw_mm.KWResNet', depth=18, out_indices=(4, )),
     r'out_indices must be in \[0, 4\), got 4'),
    (dict(type='kw_mm.KWResNet', depth=18, frozen_stages=5),
     r'frozen_stages must be in \[-1, 4\], got 5'),
    (dict(type='kw_mm.KWResNet', depth=18, frozen_stages=-2),
     r'frozen_stages must be in \[-1, 4\], got -2'),
    (dict(type='kw_mm.KWResNet', depth=18, drop_path_rate=1.0),
     r'drop_path_rate must be in \[0, 1\), got 1.0'),
    (dict(type='kw_mm.KWMobileNetV2', widen_factor=0.75),
     r'widen_factor must be one of \[0.5, 1.0\], got 0.75'),
    (dict(type='kw_mm.KWMobileNetV2', budget=2), r'budget must be one of \[0.5, 1, 4\], got 2'),
    (dict(type='kw_mm.KWMobileNetV2', out_indices=(8, )),
     r'out_indices must be in \[0, 8\), got 8'),
    (dict(type='kw_mm.KWMobileNetV2', frozen_stages=8),
     r'frozen_stages must be in \[-1, 7\], got 8'),
]

ids = [case.name for case in CASES]


def build(case: Case, **kwargs) -> nn.Module:
    return PRETRAIN_MODELS.build(dict(case.cfg, **kwargs))


def all_stages(case: Case) -> Tuple[int, ...]:
    return tuple(range(PRETRAIN_MODELS.get(case.cfg['type']).num_stages))


def inputs(case: Case, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, case.size, case.size, generator=gen)


def randomize_plain_tensors(model: nn.Module, seed: int = 0) -> None:
    """Random values for every 1-D tensor outside the KW machinery (norm weights, biases,
    running statistics, layer scales), so that a wrong mapping shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if ('.attention.' in key or key.startswith('warehouse_manager.')
                    or not tensor.is_floating_point() or tensor.dim() != 1):
                continue
            tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))


def one_hot_kernel(conv: KWConvNd) -> torch.Tensor:
    """The static kernel a KW layer has at t = 1, assembled cell by cell from ``beta``.

    Mixture ``j = (s * go + o) * gi + i`` fills output block o, input block i at spatial
    position s with the one cell its ``beta`` row selects (the zero cell leaves zeros).
    """
    beta = conv.attention.beta
    cells = conv.cells
    num_cells, co, ci = cells.shape[:3]
    cout, cin = conv.out_channels, conv.in_channels // conv.groups
    go, gi = cout // co, cin // ci
    spatial = math.prod(conv.kernel_size)
    assert beta.shape == (spatial * go * gi, num_cells + 1)
    assert torch.equal(beta.sum(dim=1), torch.ones(beta.shape[0], dtype=beta.dtype))
    weight = cells.new_zeros(cout, cin, spatial)
    for s in range(spatial):
        for o in range(go):
            for i in range(gi):
                k = int(beta[(s * go + o) * gi + i].argmax())
                if k < num_cells:
                    weight[o * co:(o + 1) * co, i * ci:(i + 1) * ci, s] = \
                        cells[k].reshape(co, ci)
    return weight.reshape(cout, cin, *conv.kernel_size)


def plain_twin(kw: nn.Module, case: Case) -> nn.Module:
    """The plain backbone with the KW network's t = 1 kernels and all its other tensors."""
    plain = PRETRAIN_MODELS.build(dict(case.plain, out_indices=kw.out_indices))
    plain.to(next(kw.parameters()).dtype)
    kw_modules = dict(kw.named_modules())
    kw_state = kw.state_dict()
    state = {}
    used = set()
    for key, tensor in plain.state_dict().items():
        owner, leaf = key.rsplit('.', 1)
        module = kw_modules.get(owner)
        if isinstance(module, KWConvNd) and leaf == 'weight':
            state[key] = one_hot_kernel(module).reshape(tensor.shape)
        else:
            assert key in kw_state, f'{key} of the plain backbone has no KW counterpart'
            state[key] = kw_state[key]
            used.add(key)
    extra = {k for k in kw_state if k not in used and '.attention.' not in k
             and not k.startswith('warehouse_manager.')}
    assert not extra, f'KW tensors without a plain counterpart: {sorted(extra)[:5]}'
    plain.load_state_dict(state, strict=True)
    return plain


# --------------------------------------------------------------------------- t = 1 oracle
@pytest.mark.parametrize('case', CASES, ids=ids)
def test_temperature_one_equals_plain_network(case):
    """At t = 1 every attention is one-hot: the KW network is the plain network whose kernels
    are the assigned cells (b < 1: blocks of mixtures given the zero cell are zero)."""
    torch.manual_seed(0)
    kw = build(case, out_indices=all_stages(case)).double()
    randomize_plain_tensors(kw)
    plain = plain_twin(kw, case)
    plain.eval()  # not chained: mmpretrain's ConvNeXt.train() returns None
    kw.eval()
    assert set_temperature(kw, 1.0) == sum(isinstance(m, KWAttention) for m in kw.modules())
    x = inputs(case).double()
    with torch.no_grad():
        ours, theirs = kw(x), plain(x)
    assert len(ours) == len(theirs) == kw.num_stages
    for a, b in zip(ours, theirs):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    # At t = 0 the attention mixes cells: the networks differ.
    set_temperature(kw, 0.0)
    with torch.no_grad():
        assert not torch.allclose(kw(x)[-1], theirs[-1], rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize('case', CASES, ids=ids)
def test_gradients_reach_every_parameter(case):
    model = build(case, out_indices=all_stages(case)).train()
    set_temperature(model, 0.5)
    outs = model(inputs(case))
    sum(out.square().mean() for out in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    zero = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert not zero, f'zero gradient for {zero[:5]}'


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_batch_of_one_trains(case):
    """A training batch of one sample works (the reference crashes in the attention's
    BatchNorm1d); the attentions then normalize with, and keep, their running statistics."""
    model = build(case).train()
    set_temperature(model, 0.3)
    attention_norms = {n: m.running_mean.clone() for n, m in model.named_modules()
                       if isinstance(m, _BatchNorm) and '.attention.' in n + '.'}
    out = model(inputs(case, batch=1))[-1]
    assert out.shape[0] == 1 and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters())
    modules = dict(model.named_modules())
    for name, before in attention_norms.items():
        assert torch.equal(modules[name].running_mean, before), name


def frozen_run(case: Case, freeze_warehouses: bool) -> Tuple[list, list, nn.Module, Dict]:
    """Frozen-stage outputs (eval) before and after two SGD steps in train mode."""
    torch.manual_seed(0)
    model = build(case, frozen_stages=case.frozen_stages, freeze_warehouses=freeze_warehouses,
                  out_indices=all_stages(case))
    set_temperature(model, 0.5)
    x = inputs(case)
    cells = {i: w.detach().clone() for i, w in enumerate(model.warehouse_manager.weights)}
    model.eval()
    with torch.no_grad():
        before = [o.clone() for o in model(x)[:case.frozen_stages]]
    # As an OpenMMLab optimizer wrapper: every parameter is handed to the optimizer.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    for step in range(2):
        optimizer.zero_grad()
        outs = model(inputs(case, seed=step + 1))
        sum(o.square().mean() for o in outs).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(x)[:case.frozen_stages]
    return before, after, model, cells


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_frozen_stages_do_not_change(case):
    before, after, model, cells = frozen_run(case, freeze_warehouses=True)
    assert len(before) == case.frozen_stages
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    frozen = model.frozen_modules()
    assert frozen and all(not p.requires_grad for m in frozen for p in m.parameters())
    model.train()
    assert all(not m.training for f in frozen for m in f.modules())
    # The warehouses of frozen KW layers did not move; the others trained.
    frozen_warehouses = {layer.warehouse_index for f in frozen for layer in f.modules()
                         if isinstance(layer, KWConvNd)}
    assert frozen_warehouses
    for i, w in enumerate(model.warehouse_manager.weights):
        assert torch.equal(w, cells[i]) == (i in frozen_warehouses), i


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_unfrozen_warehouses_reproduce_the_reference(case):
    """freeze_warehouses=False: the cells of frozen stages keep training, their outputs move."""
    before, after, model, cells = frozen_run(case, freeze_warehouses=False)
    assert all(w.requires_grad for w in model.warehouse_manager.weights)
    assert not any(p.requires_grad for f in model.frozen_modules() for p in f.parameters()
                   if not any(p is w for w in model.warehouse_manager.weights))
    assert all(not torch.equal(w, cells[i]) for i, w in enumerate(model.warehouse_manager.weights))
    assert not torch.equal(before[-1], after[-1])


@pytest.mark.parametrize('case', [c for c in CASES if c.batch_norm],
                         ids=[c.name for c in CASES if c.batch_norm])
def test_norm_eval(case):
    model = build(case, norm_eval=True).train()
    norms = {n: m for n, m in model.named_modules() if isinstance(m, _BatchNorm)}
    assert norms and all(not m.training for m in norms.values())
    assert any('.attention.' in n + '.' for n in norms)  # the attentions' norms included
    stats = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in norms.items()}
    model(inputs(case))
    for name, m in norms.items():
        assert torch.equal(m.running_mean, stats[name][0]), name
        assert torch.equal(m.running_var, stats[name][1]), name
    # Without norm_eval the backbone's BatchNorms update their statistics in training.
    trained = build(case).train()
    trained(inputs(case))
    assert any(not torch.equal(m.running_mean, stats[n][0])
               for n, m in trained.named_modules() if n in stats)


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize('case', CASES, ids=ids)
def test_out_indices_shapes(case):
    last = all_stages(case)[-1]
    x = inputs(case)
    for out_indices in (tuple(range(last + 1)), (0, last)):
        kw = build(case, out_indices=out_indices).eval()
        plain = PRETRAIN_MODELS.build(dict(case.plain, out_indices=out_indices))
        plain.eval()  # not chained: mmpretrain's ConvNeXt.train() returns None
        with torch.no_grad():
            ours, theirs = kw(x), plain(x)
        assert isinstance(ours, tuple) and len(ours) == len(out_indices)
        assert [o.shape for o in ours] == [t.shape for t in theirs]
    assert build(case, out_indices=-1).out_indices == (last, )


# --------------------------------------------------------------------------- registries
REGISTRY_SCRIPT = r'''
import json, sys
from mmengine.registry import init_default_scope
toolbox, cfgs = sys.argv[1], json.loads(sys.argv[2])
assert not any(m == 'kw_mm' or m.startswith('kw_mm.') for m in sys.modules)
if toolbox == 'mmdet':
    from mmdet.registry import MODELS
else:
    from mmpretrain.registry import MODELS
init_default_scope(toolbox)
names = []
for cfg in cfgs:
    model = MODELS.build(cfg)
    names.append(type(model).__module__ + '.' + type(model).__name__)
print(json.dumps(names))
'''


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize('toolbox', ['mmdet', 'mmpretrain'])
def test_builds_from_toolbox_registry_without_importing_kw_mm(toolbox):
    """``type='kw_mm.X'`` works in either toolbox's configs (as the toolboxes use
    ``mmpretrain.ConvNeXt``), found through the kw_mm scope before kw_mm is imported."""
    cfgs = [case.cfg for case in CASES]
    result = subprocess.run([sys.executable, '-c', REGISTRY_SCRIPT, toolbox, json.dumps(cfgs)],
                            capture_output=True, text=True, timeout=300,
                            cwd=os.path.dirname(os.path.abspath(__file__)))
    assert result.returncode == 0, result.stderr[-3000:]
    names = json.loads(result.stdout.strip().splitlines()[-1])
    assert [n.rsplit('.', 1)[1] for n in names] == [c.cfg['type'].split('.')[1] for c in CASES]
    assert all(n.startswith('kw_mm.') for n in names)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('cfg, match', BAD_ARGUMENTS,
                         ids=[f'{c["type"]}-{m[:20]}' for c, m in BAD_ARGUMENTS])
def test_bad_arguments_name_the_value(cfg, match):
    with pytest.raises(ValueError, match=match):
        PRETRAIN_MODELS.build(cfg)


@pytest.mark.parametrize('case', CASES, ids=ids)
def test_temperature_outside_unit_interval(case):
    model = build(case)
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match=rf'temperature must be in \[0, 1\], got {bad}'):
            set_temperature(model, bad)
    with pytest.raises(TypeError, match="got 'hot'"):
        set_temperature(model, 'hot')
    assert set_temperature(model, 1) > 0
