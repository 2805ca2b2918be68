"""The export formulation of the KernelWarehouse convolution (same math as
``functional.kw_conv_reference``), for ONNX and other graph exporters.

The straightforward KW convolution (and the fast paths' spatial layers) convolves the whole batch
with one grouped convolution whose ``groups`` is ``groups * B`` and whose weight is the stack of
the ``B`` per-sample kernels. A graph exporter cannot express that with a symbolic batch: the
weight's shape depends on the batch, and ONNX's ``Conv`` needs a kernel of known shape ("ONNX
export of convolution for kernel of unknown shape", the one issue filed on the reference
release). :func:`kw_conv_export` computes the same result with operators whose weights never
depend on the batch:

1. **Patch extraction as a fixed convolution.** A depth-wise convolution with a constant 0/1
   kernel ``[Cin * K, 1, *k]`` (``K = prod(k)``) copies, for every input channel, the ``K``
   positions of each receptive field into ``K`` channels (stride, padding and dilation of the
   layer): ``[B, Cin * K, *out]``, channel ``c * K + s``. Point-wise layers without padding skip
   it (a strided view of the input).
2. **Kernel assembly by MatMul.** ``alpha [B, M, n] @ cells [n, co * ci]``, then reshapes and one
   transpose into ``[B, groups, Cout / groups, (Cin / groups) * K]`` (input index ``(c, s)``,
   the patches' order).
3. **Per-sample convolution by batched MatMul.** ``[B, G, Cout/G, Cin/G * K] @
   [B, G, Cin/G * K, L]`` gives ``[B, G, Cout/G, L]``; a reshape gives ``[B, Cout, *out]``.

Every reshape keeps the batch as ``-1``, so an exported graph takes any batch size. The
formulation is slower and uses ``K`` times the input's memory for the patches: it is for
export, not for training (:func:`~kw_mm.cnn.fast.use_kw_impl` ``('export')`` selects it).
"""
import math
from typing import Optional

import torch

from .functional import CONV_FUNCS, KWGeometry, strided_input


def patch_kernel(geo: KWGeometry, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The constant depth-wise kernel ``[Cin * K, 1, *k]`` that extracts the receptive fields.

    Output channel ``c * K + s`` of the depth-wise convolution is input channel ``c`` seen at
    kernel position ``s`` (row-major over ``k``), the order of the kernels' flattened taps.
    """
    taps = geo.groups_spatial
    one_hot = torch.eye(taps, dtype=dtype, device=device).reshape(taps, 1, *geo.kernel_size)
    return one_hot.repeat(geo.in_channels, *([1] * (geo.dim + 1)))


def extract_patches(x: torch.Tensor, geo: KWGeometry) -> torch.Tensor:
    """The layer's receptive fields ``[B, Cin * K, *out]`` (channel ``c * K + s``)."""
    if geo.groups_spatial == 1 and not any(geo.padding):
        return strided_input(x, geo)
    return CONV_FUNCS[geo.dim](x, patch_kernel(geo, x.dtype, x.device), None,
                               groups=geo.in_channels, **geo.conv_kwargs())


def assemble_grouped_kernels(alpha: torch.Tensor, cells: torch.Tensor,
                             geo: KWGeometry) -> torch.Tensor:
    """Per-sample kernels as ``[B, groups, Cout / groups, Cin / groups * K]`` matrices."""
    flat = torch.matmul(alpha, cells.reshape(cells.shape[0], -1))  # [B, M, co * ci]
    flat = flat.reshape(-1, geo.groups_spatial, geo.groups_out, geo.groups_in, geo.cell_out,
                        geo.cell_in)
    # (b, s, o, i, p, q) -> (b, o, p, i, q, s): output channel o*co + p, input (i*ci + q, s)
    kernels = flat.permute(0, 2, 4, 3, 5, 1)
    return kernels.reshape(-1, geo.groups, geo.out_channels // geo.groups,
                           geo.in_per_group * geo.groups_spatial)


def kw_conv_export(x: torch.Tensor, alpha: torch.Tensor, cells: torch.Tensor,
                   bias: Optional[torch.Tensor], geo: KWGeometry) -> torch.Tensor:
    """The KW convolution with batch-independent weights only (see the module docstring).

    Args:
        x (Tensor): Input ``[B, Cin, *spatial]``.
        alpha (Tensor): Attentions ``[B, M, n]``.
        cells (Tensor): The warehouse ``[n, co, ci, 1, ...]``.
        bias (Tensor, optional): ``[Cout]``.
        geo (KWGeometry): The layer's shapes.

    Returns:
        Tensor: ``[B, Cout, *spatial_out]``, equal to ``kw_conv_reference``'s up to rounding.
    """
    patches = extract_patches(x, geo)
    out_size = patches.shape[2:]
    patches = patches.reshape(-1, geo.groups, geo.in_per_group * geo.groups_spatial,
                              math.prod(out_size))
    out = torch.matmul(assemble_grouped_kernels(alpha, cells, geo), patches)
    out = out.reshape(-1, geo.out_channels, *out_size)
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * geo.dim))
    return out
