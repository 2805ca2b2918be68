"""mmengine's ``AmpOptimWrapper`` that also trains on the CPU, in bfloat16.

mmengine's wrapper asserts a CUDA, NPU, MLU or MUSA device when it is built, although everything it
does after that (``torch.autocast`` around the forward through ``optim_context``, a gradient
scaler around backward and step) runs on the CPU too. On the CPU this wrapper builds it for
bfloat16 without a loss scaler; on any other device it *is* mmengine's wrapper, arguments and
all. A config names it as ``optim_wrapper=dict(type='kw_mm.CPUAmpOptimWrapper',
dtype='bfloat16', optimizer=...)``.
"""
from typing import Optional, Union

import torch
from mmengine.device import get_device
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from kw_mm.registry import OPTIM_WRAPPERS

#: The autocast dtypes the CPU branch accepts, as a config may spell them.
CPU_DTYPES = ('bfloat16', torch.bfloat16)


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """Mixed precision training as mmengine's ``AmpOptimWrapper``, on the CPU as well.

    On the CPU the forward runs under ``torch.autocast('cpu', torch.bfloat16)``; the loss is
    not scaled: bfloat16 has float32's exponent range, so a gradient that fits in float32 fits
    in bfloat16 (the only dtype of mmengine's CPU autocast). Backward, step,
    gradient clipping and accumulation, checkpoints: mmengine's ``AmpOptimWrapper`` (its
    disabled scaler passes the loss and the step through and saves an empty state).

    Args:
        loss_scale (float | str | dict): mmengine's scaler configuration; not used on the CPU.
            Defaults to ``'dynamic'``.
        dtype (str | torch.dtype, optional): The autocast dtype. On the CPU ``'bfloat16'``
            (the default there); elsewhere as mmengine's wrapper. Defaults to None.
        use_fsdp (bool): mmengine's ``ShardedGradScaler`` switch; needs a GPU. Defaults to
            False.
        **kwargs: The arguments of ``OptimWrapper`` (``optimizer``, ``accumulative_counts``,
            ``clip_grad``).
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Optional[Union[str, torch.dtype]] = None,
                 use_fsdp: bool = False,
                 **kwargs) -> None:
        device = get_device()
        if device != 'cpu':
            super().__init__(loss_scale=loss_scale, dtype=dtype, use_fsdp=use_fsdp, **kwargs)
            return
        if dtype is not None and dtype not in CPU_DTYPES:
            raise ValueError(f'CPUAmpOptimWrapper trains on the CPU in bfloat16 only, got '
                             f"dtype={dtype!r}: use dtype='bfloat16' (or OptimWrapper for "
                             'float32)')
        if use_fsdp:
            raise ValueError('CPUAmpOptimWrapper: use_fsdp=True needs a GPU (FSDP); on the CPU '
                             'use use_fsdp=False')
        # mmengine's __init__ without its device assertion: the base wrapper, then the state
        # AmpOptimWrapper's methods read.
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
        self.cast_dtype = torch.bfloat16
