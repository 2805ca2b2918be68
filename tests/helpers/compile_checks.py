"""What the ``torch.compile`` tests check on any model: graph breaks, compiled equals eager,
recompilations.

* :func:`graph_breaks`: ``torch._dynamo.explain`` of a model in evaluation or in a training
  step (Dynamo only, no backend);
* :func:`check_compiled_equals_eager`: a compiled copy's outputs in evaluation, and in a
  training step its outputs, the gradient of every parameter and the updated BatchNorm
  statistics, against the eager model's (relative error: the largest difference over the
  largest value of each tensor);
* :func:`compiled_counter`: a compiled model whose backend counts the frames Dynamo compiles
  (one per graph, so a recompilation for a new value of some state shows).

The backend of the broad checks is ``aot_eager`` (Dynamo's graph and AOTAutograd's forward and
backward graphs, executed by eager kernels): it checks that the traced graphs compute what the
Python code computes, without inductor's C++ code generation (minutes of compiler time per
model on a small CPU).

**Precision.** A traced graph may run a product in another form than eager mode (into a fresh
buffer and copied, where eager mode writes into a strided view) or inductor's fused kernels
may sum in another order: equal math, other float rounding. A random tiny network amplifies
rounding enormously in a training step (a BatchNorm over two 1x1 maps normalizes the
difference of two nearly equal numbers; KW's attention normalization ``z / (|z|_1 + eps)``
has a gradient that is the difference of two nearly equal terms), so in float32 two correct
implementations of a KW network differ far beyond 1e-5 in some gradients. The checks of whole
networks therefore run in float64 (:func:`in_float64`), where the same rounding is about 1e-16
and a graph that computes something else still shows as an O(1) error; evaluation outputs are
also checked in float32 (``train=False``), where nothing amplifies them so.
"""
import copy
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch._dynamo
import torch._dynamo.testing
import torch.nn as nn

#: Largest relative difference between compiled and eager tensors.
RTOL = 1e-5


def outputs(result) -> List[torch.Tensor]:
    """A model's result as a list of tensors."""
    return list(result) if isinstance(result, (list, tuple)) else [result]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference over the largest magnitude of ``b`` (the eager value), or over the
    square root of the dtype's epsilon if that is larger: a tensor that is zero in exact
    arithmetic holds rounding noise only (the attentions' BatchNorm means behind a BatchNorm of
    two samples are), which no relative comparison can match."""
    scale = max(b.abs().max().item(), torch.finfo(b.dtype).eps ** 0.5)
    return (a - b).abs().max().item() / scale


def largest_error(compiled: Sequence[torch.Tensor], eager: Sequence[torch.Tensor]) -> float:
    """The largest :func:`relative_error` over pairs of tensors (of equal shapes)."""
    assert len(compiled) == len(eager), (len(compiled), len(eager))
    for c, e in zip(compiled, eager):
        assert c.shape == e.shape, (c.shape, e.shape)
    return max(relative_error(c, e) for c, e in zip(compiled, eager))


def graph_breaks(model: nn.Module, inputs: tuple, train: bool):
    """``torch._dynamo.explain`` of the model in training or evaluation (without gradients)."""
    model.train(train)
    torch._dynamo.reset()
    with torch.set_grad_enabled(train):
        return torch._dynamo.explain(model)(*inputs)


def break_reasons(explanation) -> List[str]:
    """The first line of every break reason of an explanation."""
    return [r.reason.splitlines()[0] for r in explanation.break_reasons]


def loss_of(result) -> torch.Tensor:
    """The scalar a training step back-propagates: the mean square of every output."""
    return sum(o.square().mean() for o in outputs(result))


def in_float64(model: nn.Module, inputs: tuple) -> Tuple[nn.Module, tuple]:
    """``model`` and its tensor ``inputs`` in float64 (see the module docstring)."""
    return model.double(), tuple(x.double() if torch.is_tensor(x) else x for x in inputs)


def check_compiled_equals_eager(model: nn.Module, inputs: tuple, backend: str,
                                reset: bool = True, train: bool = True) -> Dict[str, float]:
    """Compile a copy of ``model``; return the largest relative errors of the outputs in
    evaluation (``'eval'``), and of the outputs (``'train'``), gradients (``'grad'``) and
    floating-point buffers such as BatchNorm statistics (``'buffers'``) of a training step.

    Args:
        model (nn.Module): The eager model (it runs the same steps as its compiled copy).
        inputs (tuple): Its positional inputs.
        backend (str): The ``torch.compile`` backend.
        reset (bool): Forget every compiled graph first (``torch._dynamo.reset``); False keeps
            the graphs of models compiled before in this process. Defaults to True.
        train (bool): Also check a training step. Defaults to True.
    """
    if reset:
        torch._dynamo.reset()
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, backend=backend)
    errors = {}
    model.eval()
    twin.eval()
    with torch.no_grad():
        errors['eval'] = largest_error(outputs(compiled(*inputs)), outputs(model(*inputs)))
    if not train:
        return errors
    model.train()
    twin.train()
    results = []
    for fn in (model, compiled):
        outs = outputs(fn(*inputs))
        loss_of(outs).backward()
        results.append(outs)
    errors['train'] = largest_error(results[1], results[0])
    grads = [(n, p.grad, q.grad) for (n, p), q in zip(model.named_parameters(),
                                                       twin.parameters())]
    missing = [n for n, g, h in grads if (g is None) != (h is None)]
    assert not missing, f'gradients computed in one model only: {missing}'
    assert any(g is not None for _, g, _ in grads), 'no gradient at all'
    errors['grad'] = max(relative_error(h, g) for _, g, h in grads if g is not None)
    stats = [(a, b) for a, b in zip(model.buffers(), twin.buffers()) if a.is_floating_point()]
    errors['buffers'] = max((relative_error(b, a) for a, b in stats), default=0.0)
    return errors


def compiled_counter(model: nn.Module) -> Tuple[Callable, 'torch._dynamo.testing.CompileCounter']:
    """``model`` compiled with a backend counting the frames it is given (after
    ``torch._dynamo.reset``), and the counter."""
    counter = torch._dynamo.testing.CompileCounter()
    torch._dynamo.reset()
    return torch.compile(model, backend=counter), counter
