"""Mixed precision for the attentions of dynamic convolutions (KW, DY-Conv, ODConv, CondConv).

Under autocast, the large products of a dynamic convolution (the kernel assembly and the
convolution) gain from half precision, but its attention does not: it is small (a pooled vector
and an MLP per sample) and precision-sensitive. KW's contrasting-driven normalization
``z / (|z|_1 + eps)`` has a gradient that is the difference of two nearly equal terms,
``g / s - sign(z) * (g . z) / s^2``, which half precision cancels to noise; the hidden
BatchNorm divides by a small batch variance; the mixture with the initialization ``beta`` at
``t > 0`` adds a small learned part to a large constant one. Run under autocast in bfloat16,
whole-network gradients of KW models drift away from the float32 ones far more than those of
the plain backbones (some attention gradients point the other way).

So every attention runs in the dtype of its own parameters with autocast switched off:
float32 under AMP (mmengine's ``AmpOptimWrapper`` and ``torch.autocast`` keep the parameters in
float32), the model's dtype otherwise. Its input, the feature map, stays in the autocast dtype:
only its pooled vector is made in the parameters' dtype. The attentions it returns are float32,
and the products that use them cast them once, together with the cells or kernels, to the
autocast dtype; while KW's temperature anneals, in two parts (:func:`split_attentions`).
"""
import functools
from typing import Callable, Sequence, Tuple, TypeVar

import torch

F = TypeVar('F', bound=Callable)


def attention_precision(method: F) -> F:
    """Run a module method (whose first argument is a tensor) with autocast switched off.

    Outside autocast the method runs as it is. Inside, it runs with autocast disabled for the
    device of its first argument, so every operation in it runs in the dtype of its inputs:
    the method must bring the feature map to its parameters' dtype itself (see
    :func:`pool_to`). Methods calling each other nest freely.
    """

    @functools.wraps(method)
    def wrapper(self, x: torch.Tensor, *args, **kwargs):
        device_type = x.device.type
        # (devices without autocast, such as 'meta', cannot ask whether it is enabled)
        if not (torch.amp.is_autocast_available(device_type)
                and torch.is_autocast_enabled(device_type)):
            return method(self, x, *args, **kwargs)
        with torch.autocast(device_type, enabled=False):
            return method(self, x, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def pool_to(x: torch.Tensor, dims: Sequence[int], dtype: torch.dtype,
            keepdim: bool = False) -> torch.Tensor:
    """The mean of ``x`` over ``dims`` in ``dtype`` (the attention's parameter dtype).

    The sum is accumulated and returned in ``dtype``. A map already in ``dtype`` is pooled
    without the ``dtype`` argument, which costs two more dispatched operations on the CPU.
    """
    if x.dtype == dtype:
        return x.mean(dim=tuple(dims), keepdim=keepdim)
    return x.mean(dim=tuple(dims), keepdim=keepdim, dtype=dtype)


def split_attentions(alpha: torch.Tensor, cells: torch.Tensor,
                     dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attentions and warehouse in ``dtype`` for an assembly that keeps the attentions' precision.

    While the temperature anneals, each assigned cell's weight is ``t`` plus a small learned
    part: half precision rounds the sum at the scale of ``t`` (bfloat16: ``2^-9 t``), about the
    size of the learned entries, so the assembled kernels lose much of what the attention
    learned. Split ``alpha`` into its value in ``dtype`` (high) and the rest ``alpha - high``
    in ``dtype`` (low); ``[high, low] @ [cells; cells]`` assembles both in one product over
    twice the cells (every path of the plan takes any number of cells), at twice the assembly's
    work, with about twice the significant bits of ``alpha``. Gradients flow through the high
    part only: the kernels' derivative with respect to ``alpha`` is the warehouse either way,
    and the low part is a constant correction (the warehouse's gradient sees both).

    Args:
        alpha (Tensor): Attentions ``[B, M, n]`` (float32 under autocast).
        cells (Tensor): The warehouse ``[n, ...]``.
        dtype (torch.dtype): The autocast dtype.

    Returns:
        tuple[Tensor, Tensor]: Attentions ``[B, M, 2n]`` and warehouse ``[2n, ...]`` in
        ``dtype``.
    """
    high = alpha.to(dtype)
    low = (alpha.detach() - high.detach().to(alpha.dtype)).to(dtype)
    half_cells = cells.to(dtype)
    return torch.cat([high, low], dim=-1), torch.cat([half_cells, half_cells], dim=0)
