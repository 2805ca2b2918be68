"""What a training run does before its first iteration: time since start and files read.

Used by ``tools/analysis/startup_time.py`` and the start-up test through a config that imports
this module (``custom_imports``) and adds :class:`StartupProbeHook`. Importing the module
installs an audit hook (``sys.addaudithook``) when ``KW_MM_COUNT_FILES_UNDER`` names a
directory: from then on every file opened and every directory listed below it is counted.
Config loading imports the module first, so everything a tool does with the data before the
first iteration is counted. Without the variable the import does nothing.
"""
import json
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, Optional

from mmengine.hooks import Hook

from kw_mm.registry import HOOKS

#: Directory below which file opens and listings are counted.
ROOT_VARIABLE = 'KW_MM_COUNT_FILES_UNDER'
#: ``time.time()`` when the measured command was started (set by the caller).
START_VARIABLE = 'KW_MM_STARTUP_T0'

_counts: Dict[str, int] = {'opens': 0, 'listings': 0}


def _install_counter(root: str) -> None:
    prefix = osp.realpath(root).rstrip(os.sep) + os.sep

    def _below(path: Any) -> bool:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return False  # a file descriptor
        return osp.realpath(path).startswith(prefix) or osp.realpath(path) + os.sep == prefix

    def audit(event: str, args: tuple) -> None:
        if event == 'open' and args and _below(args[0]):
            _counts['opens'] += 1
        elif event in ('os.listdir', 'os.scandir') and args and _below(args[0]):
            _counts['listings'] += 1

    sys.addaudithook(audit)


if os.environ.get(ROOT_VARIABLE):
    _install_counter(os.environ[ROOT_VARIABLE])


def file_counts() -> Dict[str, int]:
    """Files opened and directories listed below ``KW_MM_COUNT_FILES_UNDER`` so far."""
    return dict(_counts)


@HOOKS.register_module()
class StartupProbeHook(Hook):
    """Writes what happened before the first training iteration to ``out_file`` (JSON) and
    ends the run there (``stop=True``).

    The record: ``seconds`` from ``KW_MM_STARTUP_T0`` (or from the process start) to the
    moment the first batch is loaded and the first iteration begins, ``train_samples`` (the
    training set's size), ``batch_size`` and the file counts of :func:`file_counts`.

    Args:
        out_file (str): Where to write the record.
        stop (bool): End the process (exit status 0) after writing. Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, out_file: str, stop: bool = True) -> None:
        self.out_file = out_file
        self.stop = stop

    def before_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None
                          ) -> None:
        if runner.iter != 0:
            return
        start = os.environ.get(START_VARIABLE)
        record = dict(seconds=time.time() - float(start) if start else None,
                      train_samples=len(runner.train_dataloader.dataset),
                      batch_size=runner.train_dataloader.batch_size,
                      counted_under=os.environ.get(ROOT_VARIABLE), **file_counts())
        with open(self.out_file, 'w') as f:
            json.dump(record, f)
        if self.stop:
            runner.logger.info(f'start-up probe: first iteration reached, record in '
                               f'{self.out_file}; stopping')
            raise SystemExit(0)
