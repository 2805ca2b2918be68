"""``torch.compile`` of every way a KW layer runs: each ``kw_impl`` (the plan, every fast path of
:data:`kw_mm.cnn.plan.PATHS` forced, the oracle, the export formulation), in evaluation and in a
training step, compiled equal to eager with no graph break, on a small network holding every
layer kind the paths tell apart (3x3 with bias, strided 3x3, point-wise, depth-wise, strided
point-wise, ``KWLinear``) with the temperature inside (0, 1) so the initialization enters.

The checks are those of the backbones (:mod:`tests.helpers.compile_checks`, backend
``aot_eager``); which path ran under compilation is read from the plans Dynamo made while
tracing (:func:`kw_mm.cnn.plan.cached_plan`), never by patching.
"""
import pytest
import torch
import torch._dynamo
import torch.nn as nn

from kw_mm.cnn import WarehouseManager, apply_kw_impl, set_temperature
from kw_mm.cnn import plan as plan_module
from kw_mm.cnn.fast import use_kw_impl
from kw_mm.cnn.plan import IM2COL, IM2COL_TRANSPOSED, KW_IMPLS, PATHS, applies
from tests.helpers.compile_checks import (RTOL, break_reasons, check_compiled_equals_eager,
                                          compiled_counter, graph_breaks, largest_error,
                                          outputs)


class LayerKinds(nn.Module):
    """Every KW layer kind the paths tell apart, one warehouse per kind."""

    def __init__(self) -> None:
        super().__init__()
        manager = WarehouseManager()
        self.manager = manager

        def conv(cin, cout, k, name, stride=1, groups=1, bias=False):
            return manager.reserve(cin, cout, k, stride=stride, padding=k // 2, groups=groups,
                                   bias=bias, warehouse_name=name)

        self.convs = nn.ModuleList([
            conv(8, 16, 3, 'spatial', bias=True),
            conv(16, 16, 3, 'spatial', stride=2),
            conv(16, 32, 1, 'pointwise'),
            conv(32, 32, 3, 'depthwise', groups=32),
            conv(32, 16, 1, 'pointwise', stride=2),
        ])
        self.head = manager.reserve(16, 10, warehouse_name='linear', layer_type='linear')
        manager.store()
        manager.allocate(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.mean(dim=(2, 3)))


def build() -> LayerKinds:
    torch.manual_seed(0)
    model = LayerKinds()
    set_temperature(model, 0.5)
    return model


def inputs() -> tuple:
    return (torch.randn(3, 8, 8, 8, generator=torch.Generator().manual_seed(0)), )


def traced_paths(impl: str, needs_grad: bool) -> set:
    """The paths of the plans made while tracing with ``kw_impl=impl``."""
    return {p.path for p in plan_module._PLANS.values()
            if p.kw_impl == impl and p.needs_grad == needs_grad}


@pytest.mark.parametrize('impl', KW_IMPLS)
def test_every_kw_impl_compiles_equal_to_eager(impl):
    model = apply_kw_impl(build(), impl)
    plan_module.clear_plans()
    errors = check_compiled_equals_eager(model, inputs(), 'aot_eager')
    assert max(errors.values()) < RTOL, errors
    if impl in PATHS:
        # the forced path ran in the compiled graphs wherever it applies
        geos = [m.geometry for m in model.modules() if hasattr(m, 'warehouse_index')]
        for grad in (False, True):
            if any(applies(impl, g, grad) for g in geos):
                assert impl in traced_paths(impl, grad), (impl, grad)
    for train in (False, True):
        explanation = graph_breaks(model, inputs(), train)
        assert explanation.graph_break_count == 0, break_reasons(explanation)


def test_forced_transposed_path_under_compile():
    """``'im2col-transposed'`` keeps a transposed copy of the warehouse between eager calls; a
    compiled graph cannot keep or check one. Forced under compilation, the path runs in
    inference with the warehouse transposed inside the graph (no kept copy: its plan counts no
    cells), and a training step, which the path cannot run, takes the plan's path."""
    model = apply_kw_impl(build(), IM2COL_TRANSPOSED)
    plan_module.clear_plans()
    errors = check_compiled_equals_eager(model, inputs(), 'aot_eager')
    assert max(errors.values()) < RTOL, errors
    # eager layers hand their kept copy's cell count to the plan, compiled ones none
    compiled = [p for p in plan_module._PLANS.values() if p.num_cells is None]
    assert {p.path for p in compiled if not p.needs_grad} >= {IM2COL_TRANSPOSED}
    assert all(p.route[0] == 'forced' for p in compiled if p.path == IM2COL_TRANSPOSED)
    assert IM2COL_TRANSPOSED not in {p.path for p in compiled if p.needs_grad}


def test_plan_takes_transposed_path_in_eager_only():
    """A layer the plan sends to ``'im2col-transposed'`` in eager inference (a 7x7-stage-like
    layer: 64 channels, 4x4 map, batch 4) runs ``'im2col'`` compiled, with equal outputs."""
    torch.manual_seed(0)
    manager = WarehouseManager()
    net = nn.Module()
    net.manager = manager
    net.layer = manager.reserve(64, 64, 3, padding=1, bias=False, warehouse_name='w')
    manager.store()
    manager.allocate(net)
    set_temperature(net, 0.5)
    x = torch.randn(4, 64, 4, 4, generator=torch.Generator().manual_seed(0))
    net.eval()
    paths = {}
    with torch.no_grad():
        for name, fn in (('eager', net.layer), ('compiled', torch.compile(
                net.layer, backend='aot_eager'))):
            torch._dynamo.reset()
            plan_module.clear_plans()
            paths[name] = (fn(x), {p.path for p in plan_module._PLANS.values()})
    assert paths['eager'][1] == {IM2COL_TRANSPOSED}
    assert paths['compiled'][1] == {IM2COL}
    assert largest_error([paths['compiled'][0]], [paths['eager'][0]]) < RTOL


def test_use_kw_impl_block_reaches_the_compiled_model():
    """A ``use_kw_impl`` block around a compiled model switches its implementation (Dynamo
    guards on it: one recompilation per implementation, none per call)."""
    model = build().eval()
    compiled, counter = compiled_counter(model)
    x = inputs()
    with torch.no_grad():
        for impl in ('auto', 'reference', IM2COL, 'reference', 'auto'):
            with use_kw_impl(impl):
                error = largest_error(outputs(compiled(*x)), outputs(model(*x)))
            assert error < RTOL, (impl, error)
    assert counter.frame_count == 3
