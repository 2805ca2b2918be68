"""Nothing lost: what a training run may do with the checkpoints already in its work dir.

mmengine trains into an existing work dir without a word and replaces its ``epoch_N.pth`` and
``last_checkpoint``; asked to resume where there is nothing, it logs "Auto resumed from the
latest checkpoint None" and starts from scratch. ``tools/train.py`` checks first.
"""
import glob
import os.path as osp
from typing import List, Optional


def checkpoints_in(work_dir: str) -> List[str]:
    """The checkpoint files (``*.pth``) directly in ``work_dir`` and its ``last_checkpoint``
    record, sorted; empty if the directory does not exist."""
    if not osp.isdir(work_dir):
        return []
    found = sorted(osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth')))
    if osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        found.append('last_checkpoint')
    return found


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``last_checkpoint`` names (as mmengine's auto-resume reads it), if that
    file exists."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        path = f.read().strip()
    return path if path and osp.isfile(path) else None


def _shown(names: List[str], limit: int = 6) -> str:
    return ', '.join(names[:limit]) + (f', ... ({len(names)} files)' if len(names) > limit
                                       else '')


def check_work_dir(work_dir: str, resume: Optional[str], overwrite: bool,
                   allow_fresh: bool) -> Optional[str]:
    """Refuse to lose checkpoints or to pretend to resume.

    Args:
        work_dir (str): The run's work directory.
        resume (str, optional): ``'auto'`` (``--resume`` without a path), a checkpoint path,
            or None.
        overwrite (bool): ``--overwrite``: train from scratch into a work dir that holds
            checkpoints (they are replaced as the new run saves its own).
        allow_fresh (bool): ``--allow-fresh``: with ``--resume`` and nothing to resume, start
            from scratch.

    Returns:
        str | None: A line to print when the run goes on in a notable way (a fresh start
        asked for with ``--allow-fresh``), else None.

    Raises:
        FileExistsError: ``work_dir`` holds checkpoints and neither ``resume`` nor
            ``overwrite`` is given.
        FileNotFoundError: ``resume == 'auto'`` and there is no checkpoint to resume, without
            ``allow_fresh``.
    """
    existing = checkpoints_in(work_dir)
    if resume is None:
        if existing and not overwrite:
            raise FileExistsError(
                f'work dir {work_dir} already holds checkpoints ({_shown(existing)}); '
                'continue that run with --resume, or start a new one over them with '
                '--overwrite (or choose another --work-dir)')
        return None
    if resume == 'auto' and latest_checkpoint(work_dir) is None:
        what = (f'its files ({_shown(existing)}) but no valid last_checkpoint' if existing
                else 'no checkpoint')
        if not allow_fresh:
            raise FileNotFoundError(
                f'--resume: nothing to resume in {work_dir} ({what}); give a checkpoint '
                '(--resume PATH), or add --allow-fresh to start from scratch')
        return f'--resume: nothing to resume in {work_dir} ({what}); starting from scratch ' \
               '(--allow-fresh)'
    return None
