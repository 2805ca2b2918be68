"""Fast paths of the KernelWarehouse convolution (same math as the reference in ``functional``).

:func:`kw_conv` computes exactly what :func:`~kw_mm.cnn.functional.kw_conv_reference` computes
(per-sample kernels ``alpha @ cells``, one convolution per sample, optional bias) and is what
:class:`~kw_mm.cnn.kw_conv.KWConvNd` runs. Two cases, one path each:

* **Point-wise layers** (1x1 kernels, ``groups == 1``, no padding; also ``KWLinear``): the
  convolution of a sample is a matrix product, so the kernels are assembled straight into
  ``[B, gi, Cout, ci]`` blocks (the mixtures' attentions are re-ordered instead of the kernels)
  and applied with ``torch.bmm`` / ``baddbmm_``, one product per input block ``i``. No permute
  copy of the kernels, no grouped convolution, the bias fused into the first product, and the
  input's memory format (contiguous, channels_last, or the transposed tokens of ``KWLinear``)
  used as it is.
* **Spatial layers** (3x3, depth-wise, strided, dilated, 1-D/3-D): kernels in the layout the
  convolution wants (``assemble_kernels_reference``: one matrix product and one permute copy),
  then one grouped convolution over the samples of a chunk (a plain convolution when a chunk
  holds one sample, e.g. at batch size 1), the bias fused into it.

Both cases run the batch in **chunks** whose kernels take at most :data:`CHUNK_BYTES` on the
CPU. Assembled kernels are large (KW 1x ResNet18 at batch 8 assembles 350 MB of kernels per
forward) and every buffer above glibc's largest mmap threshold (32 MiB) is mapped fresh and
page-faulted in on every call; on the 2-core test machines this cost more than the arithmetic
(the 512-channel 3x3 layer at batch 8 ran 2.6x faster in chunks of 2 samples). Smaller
buffers are recycled by the allocator and stay warm in the last-level cache between the
assembly and the convolution. On other devices the whole batch is one chunk.
"""
import math
from typing import List, Optional

import torch
import torch.nn.functional as F

from .functional import CONV_FUNCS, KWGeometry, assemble_kernels_reference

#: Largest size of the kernels assembled at once on the CPU (bytes); see the module docstring.
CHUNK_BYTES = 24 * 2**20


def kernel_bytes_per_sample(cells: torch.Tensor, geo: KWGeometry) -> int:
    """Bytes of one sample's assembled kernel ``[Cout, Cin/groups, *k]``."""
    return math.prod(geo.weight_shape) * cells.element_size()


def batch_chunks(batch: int, cells: torch.Tensor, geo: KWGeometry,
                 chunk_bytes: Optional[int] = None) -> List[int]:
    """Sizes of the sample chunks the batch is assembled and convolved in (even split).

    Args:
        batch (int): Number of samples.
        cells (Tensor): The warehouse (its device and dtype decide the budget).
        geo (KWGeometry): The layer.
        chunk_bytes (int, optional): Budget per chunk. Defaults to :data:`CHUNK_BYTES` on the
            CPU and no chunking elsewhere.
    """
    if chunk_bytes is None:
        if cells.device.type != 'cpu':
            return [batch]
        chunk_bytes = CHUNK_BYTES
    per_sample = kernel_bytes_per_sample(cells, geo)
    num_chunks = min(batch, max(1, math.ceil(batch * per_sample / chunk_bytes)))
    size, extra = divmod(batch, num_chunks)
    return [size + 1] * extra + [size] * (num_chunks - extra)


def is_pointwise(geo: KWGeometry) -> bool:
    """Whether the layer is a per-sample matrix product (1x1 kernel, no groups, no padding)."""
    return geo.groups_spatial == 1 and geo.groups == 1 and not any(geo.padding)


def assemble_pointwise(alpha: torch.Tensor, cells: torch.Tensor,
                       geo: KWGeometry) -> torch.Tensor:
    """Kernels of a point-wise layer as input blocks ``[B, gi, Cout, ci]``.

    Mixture ``j = o * gi + i`` fills rows ``o*co:(o+1)*co`` of block ``i``. Re-ordering the
    (small) attentions to ``(b, i, o)`` makes the product ``alpha @ cells`` come out in that
    layout directly; with ``gi == 1`` or ``go == 1`` no re-ordering is needed at all.
    """
    batch, n = alpha.shape[0], cells.shape[0]
    go, gi = geo.groups_out, geo.groups_in
    if go > 1 and gi > 1:
        alpha = alpha.reshape(batch, go, gi, n).transpose(1, 2)
    flat = torch.matmul(alpha.reshape(batch * gi * go, n), cells.reshape(n, -1))
    return flat.view(batch, gi, geo.out_channels, geo.cell_in)


def _pointwise_conv(x: torch.Tensor, blocks: torch.Tensor, bias: Optional[torch.Tensor],
                    geo: KWGeometry) -> torch.Tensor:
    """``y[b] = sum_i blocks[b, i] @ x[b, i-th channel block]`` (+ bias), any memory format."""
    if any(s != 1 for s in geo.stride):
        x = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in geo.stride)]
    batch, spatial = x.shape[0], x.shape[2:]
    flat = x.reshape(batch, geo.in_channels, -1)  # a view unless strided above
    ci = geo.cell_in
    # Channels-last inputs (stride 1 along channels; KWLinear's tokens are laid out so) are
    # multiplied from the right, which keeps the output channels-last and avoids any copy.
    channels_last = flat.stride(1) == 1 and flat.shape[2] > 1
    if channels_last:
        tokens = flat.transpose(1, 2)  # [B, L, Cin], contiguous rows
        out = None
        for i in range(geo.groups_in):
            w_t = blocks[:, i].transpose(1, 2)  # [B, ci, Cout]
            part = tokens[:, :, i * ci:(i + 1) * ci]
            if out is None:
                out = (torch.bmm(part, w_t) if bias is None else
                       torch.baddbmm(bias.view(1, 1, -1), part, w_t))
            else:
                out = out.baddbmm_(part, w_t)
        # [B, L, Cout] -> [B, Cout, *spatial] with channels-last strides.
        return out.view(batch, *spatial, geo.out_channels).movedim(-1, 1)
    out = None
    for i in range(geo.groups_in):
        part = flat[:, i * ci:(i + 1) * ci]
        if out is None:
            out = (torch.bmm(blocks[:, i], part) if bias is None else
                   torch.baddbmm(bias.view(1, -1, 1), blocks[:, i], part))
        else:
            out = out.baddbmm_(blocks[:, i], part)
    return out.view(batch, geo.out_channels, *spatial)


def _spatial_conv(x: torch.Tensor, kernels: torch.Tensor, bias: Optional[torch.Tensor],
                  geo: KWGeometry) -> torch.Tensor:
    """Convolve every sample with its own kernel ``kernels[b]`` (+ bias)."""
    batch = x.shape[0]
    conv = CONV_FUNCS[geo.dim]
    if batch == 1:
        # No grouped-convolution trick for a single sample: the plain convolution.
        return conv(x, kernels[0], bias, groups=geo.groups, **geo.conv_kwargs())
    if bias is not None:
        bias = bias.repeat(batch)
    out = conv(x.reshape(1, -1, *x.shape[2:]), kernels.reshape(-1, *kernels.shape[2:]), bias,
               groups=geo.groups * batch, **geo.conv_kwargs())
    return out.view(batch, geo.out_channels, *out.shape[2:])


def _kw_conv_chunk(x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor,
                   bias: Optional[torch.Tensor], geo: KWGeometry) -> torch.Tensor:
    if is_pointwise(geo):
        return _pointwise_conv(x, assemble_pointwise(alpha, cells, geo), bias, geo)
    return _spatial_conv(x, assemble_kernels_reference(alpha, cells, geo), bias, geo)


def kw_conv(x: torch.Tensor,
            alpha: torch.Tensor,
            cells: torch.Tensor,
            bias: Optional[torch.Tensor],
            geo: KWGeometry,
            chunk_bytes: Optional[int] = None) -> torch.Tensor:
    """The KW convolution: per-sample kernels ``alpha @ cells`` applied to ``x``.

    Same result as :func:`~kw_mm.cnn.functional.kw_conv_reference` (up to float rounding).

    Args:
        x (Tensor): Input ``[B, Cin, *spatial]`` (any memory format).
        alpha (Tensor): Attentions ``[B, M, n]``.
        cells (Tensor): The warehouse ``[n, co, ci, 1, ...]``.
        bias (Tensor, optional): ``[Cout]``.
        geo (KWGeometry): The layer's shapes.
        chunk_bytes (int, optional): Kernel budget per chunk of samples; see
            :func:`batch_chunks`.

    Returns:
        Tensor: ``[B, Cout, *spatial_out]``.
    """
    sizes = batch_chunks(x.shape[0], cells, geo, chunk_bytes)
    if len(sizes) == 1:
        return _kw_conv_chunk(x, alpha, cells, bias, geo)
    outs = [
        _kw_conv_chunk(xc, ac, cells, bias, geo)
        for xc, ac in zip(x.split(sizes), alpha.split(sizes))
    ]
    return torch.cat(outs)


# ---------------------------------------------------------------------------- implementation switch
#: The implementations :class:`~kw_mm.cnn.kw_conv.KWConvNd` can run.
KW_IMPLS = ('fast', 'reference')
_impl = 'fast'


def get_kw_impl() -> str:
    """The implementation KW layers run: ``'fast'`` (default) or ``'reference'``."""
    return _impl


def set_kw_impl(name: str) -> None:
    """Make every KW layer run ``name``: ``'fast'`` or ``'reference'`` (the oracle, slow).

    ``'reference'`` runs :func:`~kw_mm.cnn.functional.kw_attention_reference` and
    :func:`~kw_mm.cnn.functional.kw_conv_reference`: the straightforward implementation the
    benchmark compares against and the tests check the fast paths with.
    """
    global _impl
    if name not in KW_IMPLS:
        raise ValueError(f'KW implementation must be one of {KW_IMPLS}, got {name!r}')
    _impl = name


class use_kw_impl:
    """Context manager running KW layers with another implementation.

    Example:
        >>> with use_kw_impl('reference'):
        ...     out = model(x)
    """

    def __init__(self, name: str) -> None:
        if name not in KW_IMPLS:
            raise ValueError(f'KW implementation must be one of {KW_IMPLS}, got {name!r}')
        self.name = name
        self.previous = None

    def __enter__(self) -> 'use_kw_impl':
        self.previous = get_kw_impl()
        set_kw_impl(self.name)
        return self

    def __exit__(self, *exc) -> None:
        set_kw_impl(self.previous)
