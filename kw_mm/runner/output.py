"""What the tools print: what a person needs on the console, everything in the log file.

mmengine's Runner prints its whole environment (about 40 lines: compiler, CUDA, versions) and
the full config (hundreds of lines) at the start of every run. :class:`QuietRunner` sends both
to the run's log file only and prints where they are; ``--verbose`` keeps mmengine's behaviour.
It also keeps off the console mmengine's deprecation warnings about mmengine's own internals
(:data:`INTERNAL_DEPRECATIONS`), which every training run repeats and no config can avoid.
"""
import contextlib
import logging
import os
import os.path as osp
from typing import Any, Dict, Iterator, Mapping

from mmengine.runner import Runner

#: Scalars of the message hub that are timings, not metrics.
TIMINGS = ('time', 'data_time')


#: mmengine's warnings about its own internals: its ``CheckpointHook`` builds a ``FileClient``
#: (with the ``'disk'`` backend alias) in every training run, whatever the config says, and
#: each build logs both deprecations. Kept in the log file, off the console.
INTERNAL_DEPRECATIONS = ('"FileClient" will be deprecated in future',
                         '"HardDiskBackend" is the alias of "LocalBackend"')


class _DropInternalDeprecations(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in INTERNAL_DEPRECATIONS)


def _console_handlers(logger: logging.Logger) -> list:
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def quiet_internal_deprecations(logger: logging.Logger) -> None:
    """Keep :data:`INTERNAL_DEPRECATIONS` off ``logger``'s console (its files keep them)."""
    for handler in _console_handlers(logger):
        if not any(isinstance(f, _DropInternalDeprecations) for f in handler.filters):
            handler.addFilter(_DropInternalDeprecations())


class _DropAll(logging.Filter):

    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def console_muted(logger: logging.Logger) -> Iterator[None]:
    """Inside the block, ``logger`` writes to its files only, not to the console."""
    muted = _console_handlers(logger)
    drop = _DropAll()
    for handler in muted:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in muted:
            handler.removeFilter(drop)


class QuietRunner(Runner):
    """mmengine's Runner, with its environment dump, config text and mmengine's warnings about
    its own internals in the log file only."""

    def _log_env(self, env_cfg: dict) -> None:
        quiet_internal_deprecations(self.logger)
        with console_muted(self.logger):
            super()._log_env(env_cfg)
        log_file = osp.join(self.log_dir, f'{self.timestamp}.log')
        self.logger.info(f'environment and full config: in {log_file} (--verbose prints them)')


def is_first_process() -> bool:
    """Rank 0, also before the process group exists (torchrun sets ``RANK``)."""
    return int(os.environ.get('RANK', '0')) == 0


def say(line: str) -> None:
    """Print ``line`` on the first process only (the others would repeat it)."""
    if is_first_process():
        print(line, flush=True)


def build_runner(cfg: Any, verbose: bool = False) -> Runner:
    """The Runner of ``cfg`` (its own ``runner_type`` if it names one), quiet unless
    ``verbose``."""
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        return RUNNERS.build(cfg)
    return (Runner if verbose else QuietRunner).from_cfg(cfg)


def temperature_summary(cfg: Mapping) -> str:
    """How the run sets the KW temperature t, from its custom hooks."""
    for hook in cfg.get('custom_hooks') or []:
        kind = str(hook.get('type', '')).split('.')[-1] if isinstance(hook, Mapping) else ''
        if kind == 'KWTemperatureHook':
            return f"t anneals from 1 to 0 over {hook.get('anneal_epochs')} epochs"
        if kind == 'KWFinetuneHook':
            return 't = 0 (fine-tuning)'
    return 'no KW temperature hook'


def run_header(tool: str, cfg: Any, config_path: str) -> str:
    """One line: the tool, the config, the work dir and the temperature schedule."""
    parts = [f'{tool}: config {config_path}', f'work dir {cfg.get("work_dir")}']
    train_cfg = cfg.get('train_cfg') or {}
    if tool == 'train' and train_cfg.get('max_epochs'):
        parts.append(f"{train_cfg['max_epochs']} epochs")
    parts.append(temperature_summary(cfg))
    return '; '.join(parts)


def last_validation_metrics(runner: Runner) -> Dict[str, float]:
    """The metrics of the run's last validation (empty if it never validated)."""
    metrics = {}
    for key, buffer in runner.message_hub.log_scalars.items():
        if key.startswith('val/') and key[4:] not in TIMINGS:
            metrics[key[4:]] = float(buffer.current())
    return metrics
