"""Every path of the KW attention against the oracles, and the folded evaluation MLP's cache.

Paths of :class:`~kw_mm.cnn.KWAttention`: training (batch statistics), evaluation with autograd
(the modules), evaluation without autograd (BatchNorm folded into fc1, kept between calls) in
``no_grad`` and ``inference_mode``, evaluation with a hook on an MLP module (the modules, so the
hook runs), LayerNorm, the non-local basis, a non-shared cell access and another attention
function; t = 0, 1/2, 1. Each must agree with :func:`~kw_mm.cnn.kw_attention_reference` on the
module's logits and, where the paper's attention applies, with the independent oracle of
``tests/helpers/kw_oracle.py`` (relative error < 1e-5). The folded weights must follow every
change of the parameters and statistics they come from, and the folded path must trace in
Dynamo without a graph break.
"""
import copy

import pytest
import torch
import torch.nn as nn

from kw_mm.cnn import KWAttention, kw_attention_reference
from tests.helpers.kw_oracle import kw_alpha

TOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    return diff / scale if scale > 0 else diff


def randomize(att: KWAttention) -> KWAttention:
    """Non-trivial norm parameters, running statistics and biases."""
    with torch.no_grad():
        for m in att.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.uniform_(-0.2, 0.2)
        if att.use_basis:
            att.basis_bias.uniform_(-0.2, 0.2)
    return att


#: name -> (KWAttention kwargs, budget, input shape); 'paper' marks the oracle's design
ATTENTIONS = {
    'paper': (dict(), 1.0, (3, 32, 5, 5)),
    'paper-batch1': (dict(), 1.0, (1, 32, 5, 5)),
    'paper-tokens': (dict(), 1.0, (3, 32, 7)),
    'paper-pooled': (dict(), 1.0, (3, 32)),
    'layernorm': (dict(norm='LN'), 1.0, (3, 32, 5, 5)),
    'basis': (dict(nonlocal_basis_ratio=1 / 16, cell_num_ratio=0.5, start_cell=3), 0.5,
              (3, 32, 5, 5)),
    'private': (dict(cell_access='private', cell_num_ratio=2.0), 2.0, (3, 32, 5, 5)),
    'softmax': (dict(attention_function='softmax'), 1.0, (3, 32, 5, 5)),
}


def build(name: str) -> KWAttention:
    kwargs, budget, _ = ATTENTIONS[name]
    cells = 9 * 2 if name == 'private' else 40
    att = KWAttention(32, 9, cells, **kwargs)
    att.assign_cells(3 if name != 'private' else 0, budget)
    return randomize(att)


def reference(att: KWAttention, x: torch.Tensor) -> torch.Tensor:
    """The straightforward normalization and mix of the module's (unfolded) logits."""
    with torch.no_grad():
        return att.expand(kw_attention_reference(att.logits(x), att.beta, att.mix_temperature,
                                                 att.attention_function))


@pytest.mark.parametrize('t', [0.0, 0.5, 1.0])
@pytest.mark.parametrize('mode', ['train', 'eval-grad', 'eval-no-grad', 'eval-inference',
                                  'eval-hooked'])
@pytest.mark.parametrize('name', sorted(ATTENTIONS))
def test_every_path_matches_the_oracles(name, mode, t):
    att = build(name)
    att.temperature = t
    x = torch.randn(ATTENTIONS[name][2])
    att.train(mode == 'train')
    if mode == 'eval-hooked':
        calls = []
        att.norm1.register_forward_hook(lambda *args: calls.append(1))
    if mode in ('eval-no-grad', 'eval-hooked'):
        with torch.no_grad():
            out = att(x)
    elif mode == 'eval-inference':
        with torch.inference_mode():
            out = att(x)
    else:
        out = att(x)
        assert out.requires_grad
    if mode == 'eval-hooked':
        assert calls  # the modules ran, hooks included
    assert out.is_contiguous() and out.shape == (x.shape[0], 9, att.num_cells)
    assert rel_err(out, reference(att, x)) < TOL
    if name.startswith('paper'):
        pooled_input = x if x.dim() > 2 else x[..., None]
        alpha, _ = kw_alpha(att, pooled_input, t, training=mode == 'train')
        assert rel_err(out, alpha) < TOL


def folded(att: KWAttention) -> tuple:
    return att._folded.kept


def eval_output(att: KWAttention, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return att(x)


def test_folded_mlp_is_kept_while_its_sources_are_unchanged():
    att = build('paper').eval()
    x = torch.randn(2, 32, 5, 5)
    eval_output(att, x)
    kept = folded(att)
    assert kept is not None
    eval_output(att, x)
    assert folded(att) is kept  # not recomputed
    eval_output(att, torch.randn(1, 32, 3, 3))  # another input: the same fold
    assert folded(att) is kept
    with torch.inference_mode():  # (what a benchmark runs) made there, used outside it
        att(x)
    att.train()
    att.eval()
    with torch.inference_mode():
        att(x)
    kept = folded(att)
    assert rel_err(eval_output(att, x), reference(att, x)) < TOL
    assert folded(att) is kept
    att.eval()  # eval() on an evaluating attention keeps it
    assert folded(att) is kept
    att.train()  # a switch drops it
    assert folded(att) is None


def _inplace(att):
    with torch.no_grad():
        att.fc1.weight.mul_(1.5)


def _statistics(att):
    att.train()
    att(torch.randn(4, 32, 5, 5))  # a training step updates the running statistics
    att.eval()


def _load(att):
    state = {k: v.clone() for k, v in att.state_dict().items()}
    state['norm1.running_var'] *= 3
    state['fc2.weight'] *= -1
    att.load_state_dict(state)


def _data_then_eval(att):
    # as mmengine's EMA hook swaps weights of a training model, then the loop calls eval()
    att.train()
    att.norm1.weight.data.copy_(torch.rand(att.norm1.weight.shape))
    att.fc2.bias.data.copy_(torch.rand(att.fc2.bias.shape))
    att.eval()


def _fc2_data(att):
    # fc2 is read from its parameters at every call: even a .data write is seen
    att.fc2.weight.data.mul_(-1)


def _replace(att):
    att.fc1.weight.data = att.fc1.weight.data * 2  # new storage


def _double(att):
    att.double()


def _optimizer(att):
    opt = torch.optim.SGD(att.parameters(), lr=0.5)
    # still evaluating (no train()/eval() call): only the version counters see the step
    att(torch.randn(4, 32, 5, 5)).square().sum().backward()
    opt.step()


CHANGES = {'in-place': _inplace, 'statistics': _statistics, 'load_state_dict': _load,
           '.data-then-eval': _data_then_eval, 'double': _double, 'optimizer-step': _optimizer,
           'fc2-.data': _fc2_data, 'replaced-storage': _replace}


@pytest.mark.parametrize('change', sorted(CHANGES))
def test_folded_mlp_follows_its_sources(change):
    att = build('paper').eval()
    x = torch.randn(2, 32, 5, 5)
    before = eval_output(att, x)
    CHANGES[change](att)
    x = x.to(att.fc1.weight.dtype)
    after = eval_output(att, x)
    assert rel_err(after, reference(att, x)) < TOL
    if change == 'double':  # same values, another dtype: the fold followed the parameters
        assert after.dtype == torch.float64
    else:
        assert rel_err(after, before) > 1e-3  # the change did change the output


def test_copies_start_without_the_folded_mlp():
    att = build('paper').eval()
    x = torch.randn(2, 32, 5, 5)
    eval_output(att, x)
    twin = copy.deepcopy(att)
    assert folded(twin) is None
    with torch.no_grad():
        twin.fc1.weight.neg_()
    assert rel_err(eval_output(twin, x), reference(twin, x)) < TOL
    assert rel_err(eval_output(att, x), reference(att, x)) < TOL


def test_folded_path_traces_without_graph_breaks():
    att = build('paper').eval()
    att.temperature = 0.5
    x = torch.randn(2, 32, 5, 5)
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(att)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(att, backend='eager', fullgraph=True)
        assert rel_err(compiled(x), reference(att, x)) < TOL
    assert folded(att) is None  # nothing kept while tracing
