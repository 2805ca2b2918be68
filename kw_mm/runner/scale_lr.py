"""``--auto-scale-lr``: the linear scaling rule, as mmpretrain's and mmdet's ``tools/train.py``.

A config's learning rate is for the total batch ``auto_scale_lr.base_batch_size``. The run's
total batch is the number of processes x the per-process batch x the gradient accumulation
(``optim_wrapper.accumulative_counts``), the images behind one optimizer step. mmengine's own
``Runner.scale_lr`` leaves the accumulation out, so a run that keeps the total batch on smaller
GPUs (``train_dataloader.batch_size=128 optim_wrapper.accumulative_counts=4``) would get a
quarter of the lr; the tools therefore scale the config's lr themselves and keep mmengine's
switch (``auto_scale_lr.enable``) off.
"""
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

#: Where each launcher puts the number of processes of the job.
WORLD_SIZE_VARIABLES = {'pytorch': 'WORLD_SIZE', 'slurm': 'SLURM_NTASKS',
                        'mpi': 'OMPI_COMM_WORLD_SIZE'}


@dataclass
class TotalBatch:
    """The images behind one optimizer step of a run."""
    processes: int
    per_process: int
    accumulation: int

    @property
    def size(self) -> int:
        return self.processes * self.per_process * self.accumulation

    def __str__(self) -> str:
        text = f'{self.processes} process{"es" if self.processes != 1 else ""} x ' \
               f'{self.per_process} per process'
        if self.accumulation != 1:
            text += f' x {self.accumulation} accumulated'
        return f'{self.size} = {text}'


def launched_processes(launcher: str, environ: Optional[Mapping[str, str]] = None) -> int:
    """The number of processes of the job, from the launcher's environment (1 without one)."""
    environ = os.environ if environ is None else environ
    variable = WORLD_SIZE_VARIABLES.get(launcher)
    if variable is None:
        return 1
    value = environ.get(variable)
    if value is None:
        return int(environ.get('WORLD_SIZE', '1'))
    return int(value)


def total_batch(cfg: Mapping, processes: int) -> TotalBatch:
    """The run's total batch: ``processes`` x ``train_dataloader.batch_size`` x
    ``optim_wrapper.accumulative_counts``."""
    per_process = int(cfg['train_dataloader']['batch_size'])
    accumulation = int((cfg.get('optim_wrapper') or {}).get('accumulative_counts', 1))
    return TotalBatch(processes, per_process, accumulation)


def _optimizers(optim_wrapper: Mapping):
    """The optimizer configs of an optim wrapper config (one, or one per wrapped model)."""
    if isinstance(optim_wrapper.get('optimizer'), Mapping):
        yield optim_wrapper['optimizer']
        return
    for value in optim_wrapper.values():  # an OptimWrapperDict: one wrapper per key
        if isinstance(value, Mapping) and isinstance(value.get('optimizer'), Mapping):
            yield value['optimizer']


def config_lr(cfg: Mapping) -> Optional[float]:
    """The lr of the config's (first) optimizer, or None if it sets none."""
    for optimizer in _optimizers(cfg.get('optim_wrapper') or {}):
        if 'lr' in optimizer:
            return float(optimizer['lr'])
    return None


def apply_auto_scale_lr(cfg: Any, processes: int, config_path: str) -> str:
    """Scale every optimizer lr of ``cfg`` by total batch / ``auto_scale_lr.base_batch_size``.

    Args:
        cfg (Config): The merged config (changed in place).
        processes (int): Processes of the run (:func:`launched_processes`).
        config_path (str): The config file, for the error message.

    Returns:
        str: One line for the run header: the lr used and how it follows from the config's.

    Raises:
        ValueError: One line if the config has no ``auto_scale_lr.base_batch_size`` or no lr.
    """
    auto = cfg.get('auto_scale_lr')
    base = auto.get('base_batch_size') if isinstance(auto, Mapping) else None
    if not base:
        raise ValueError(f'--auto-scale-lr: {config_path} has no auto_scale_lr.base_batch_size '
                         '(the total batch its lr is for); add `auto_scale_lr = '
                         'dict(base_batch_size=N)` to the config or drop --auto-scale-lr')
    batch = total_batch(cfg, processes)
    ratio = batch.size / float(base)
    before = config_lr(cfg)
    if before is None:
        raise ValueError(f'--auto-scale-lr: {config_path} sets no optim_wrapper.optimizer.lr '
                         'to scale')
    for optimizer in _optimizers(cfg.optim_wrapper):
        if 'lr' in optimizer:
            optimizer['lr'] = float(optimizer['lr']) * ratio
    cfg.auto_scale_lr['enable'] = False  # scaled here; mmengine would scale it again
    return (f'lr {before * ratio:.6g} (--auto-scale-lr: {before:.6g} x {batch.size}/{int(base)}'
            f'; total batch {batch}; auto_scale_lr.base_batch_size {int(base)})')


def lr_summary(cfg: Mapping, processes: int) -> str:
    """The header line of a run without ``--auto-scale-lr``: its lr and total batch, and a
    hint when the total batch differs from the one the lr is for."""
    lr = config_lr(cfg)
    batch = total_batch(cfg, processes)
    text = f'lr {lr:.6g}; total batch {batch}' if lr is not None else f'total batch {batch}'
    auto = cfg.get('auto_scale_lr')
    base = auto.get('base_batch_size') if isinstance(auto, Mapping) else None
    if base and int(base) != batch.size:
        text += (f' (the lr is for a total batch of {int(base)}: --auto-scale-lr scales it '
                 f'to {lr * batch.size / float(base):.6g})')
    return text
