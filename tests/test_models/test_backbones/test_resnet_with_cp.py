"""Gradient checkpointing (``with_cp``) of the KW ResNets and the rivals' ResNets: a training
step with it gives the outputs and every parameter gradient of the step without it."""
import pytest
import torch

from kw_mm import set_temperature
from kw_mm.models import DynamicResNet, KWResNet

CASES = [
    (KWResNet, dict(depth=18, budget=1, drop_path_rate=0.2)),
    (KWResNet, dict(depth=50, budget=0.5, drop_path_rate=0.2)),
    (DynamicResNet, dict(depth=18, method='dyconv', drop_path_rate=0.2)),
    (DynamicResNet, dict(depth=18, method='odconv')),
    (DynamicResNet, dict(depth=18, method='condconv')),
]


def _step(model, x):
    model.train()
    set_temperature(model, 0.5)
    torch.manual_seed(7)  # the same drop-path draws in both runs
    out = model(x)[0]
    loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
    loss.backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()
                          if p.grad is not None}


@pytest.mark.parametrize('cls,kwargs', CASES, ids=lambda v: str(v.get('method', v.get('depth')))
                         if isinstance(v, dict) else v.__name__)
def test_with_cp_gives_the_same_gradients(cls, kwargs):
    plain = cls(**kwargs)
    checkpointed = cls(**kwargs, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.with_cp and all(
        block.with_cp for name in checkpointed.res_layers for block in getattr(checkpointed,
                                                                              name))
    x = torch.randn(2, 3, 48, 48)
    out, grads = _step(plain, x)
    out_cp, grads_cp = _step(checkpointed, x)
    torch.testing.assert_close(out_cp, out)
    assert grads_cp.keys() == grads.keys()
    assert len(grads) == len([p for p in plain.parameters() if p.requires_grad])
    for name, grad in grads.items():
        torch.testing.assert_close(grads_cp[name], grad, msg=lambda m: f'{name}: {m}')


def test_with_cp_off_in_eval_and_without_grad():
    model = KWResNet(depth=18, budget=1, with_cp=True).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))[0]
    assert out.shape == (1, 512, 1, 1)
