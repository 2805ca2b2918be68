"""What ``tools/train.py`` and ``tools/test.py`` do before building a Runner and after it.

Kept here (not in the scripts) so the scripts stay thin and the steps are importable and tested:
pick the toolbox from the config's ``default_scope``, load checkpoints safely, run multi-process
jobs on CPUs with gloo, point every dataset at one ``data_root``, and fail early with clear
messages for missing data or checkpoints.
"""
import argparse
import os
import os.path as osp
from datetime import timedelta
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch

from kw_mm.apis import build_model, register_toolbox  # noqa: F401 (the tools' entry points)
from kw_mm.utils.checkpoint import allow_mmengine_checkpoints, load_file

from .compile import enable_compile
from .config_checks import check_cfg_options

DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
EVALUATORS = ('val_evaluator', 'test_evaluator')
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def _load_local_checkpoint(filename: str, map_location: Any = 'cpu') -> Mapping:
    """mmengine's local checkpoint loader, with ``weights_only=True`` and clear errors."""
    path = osp.expanduser(filename)
    checkpoint = load_file(path, map_location=map_location)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{path} is not a checkpoint: it holds a {type(checkpoint).__name__}, '
                         'not a dict of tensors or a Runner checkpoint')
    return checkpoint


def use_safe_checkpoint_loader() -> None:
    """Make mmengine load local checkpoints through kw_mm's safe loader.

    The loader keeps torch's ``weights_only=True`` (allowing only the data types mmengine's
    Runner writes, see :func:`~kw_mm.utils.checkpoint.allow_mmengine_checkpoints`) and names the
    file when it is missing or not a checkpoint. Runner resume, ``load_from`` and
    ``mmengine.runner.load_checkpoint`` all go through it.
    """
    from mmengine.runner import CheckpointLoader
    allow_mmengine_checkpoints()
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local_checkpoint, force=True)


def check_checkpoint_file(path: str) -> None:
    """Raise a FileNotFoundError naming ``path`` if it is not an existing local file."""
    if '://' in path:
        return  # remote checkpoints are checked by their loader
    if not osp.isfile(osp.expanduser(path)):
        what = 'a directory, not a file' if osp.isdir(path) else 'not found'
        raise FileNotFoundError(f'checkpoint {path}: {what}')


# ---------------------------------------------------------------------- multi-process on CPUs
def setup_cpu_distributed(cfg: Any, launcher: str) -> bool:
    """Prepare a multi-process run without GPUs: gloo backend and DDP without device ids.

    mmengine 0.10.7 initializes the process group with ``torch.cuda.set_device`` and wraps the
    model with ``device_ids=[LOCAL_RANK]``; both need a GPU. Without one we start the gloo
    process group ourselves (from torchrun's environment) and build the DDP wrapper with
    ``device_ids=None``, as torch requires for CPU modules.

    Returns:
        bool: True if the CPU setup was applied.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {list(LAUNCHERS)}, got {launcher!r}')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(f'launcher {launcher!r} needs GPUs; without a GPU use '
                           '--launcher pytorch (tools/dist_train.sh, torchrun) with gloo')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or {}
    wrapper = dict(wrapper)
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg['model_wrapper_cfg'] = wrapper
    import torch.distributed as dist
    if not dist.is_initialized():
        timeout = dist_cfg.get('timeout')
        kwargs = {'timeout': timedelta(seconds=timeout)} if timeout else {}
        dist.init_process_group(backend='gloo', **kwargs)
    return True


def close_distributed(succeeded: bool) -> None:
    """Destroy the default process group, if this process (or mmengine) created one.

    Called in a ``finally`` by the tools: without it gloo's threads are torn down at
    interpreter exit, where one of them can still be joinable and the process dies with
    ``terminate called without an active exception`` (SIGABRT) after a run that succeeded,
    failing the whole torchrun launch. After a success every process first waits for the others
    (a barrier), so no process tears its group down while another still talks to it; after a
    failure the group is destroyed at once and the exception goes on (torchrun then stops the
    other processes and fails the launch).
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if succeeded:
            dist.barrier()
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------- data roots
def _datasets(cfg: Any) -> Iterator[dict]:
    """Every dataset config inside a dataloader's ``dataset`` (wrappers included)."""
    if isinstance(cfg, Mapping):
        yield cfg
        for key in ('dataset', 'datasets'):
            yield from _datasets(cfg.get(key))
    elif isinstance(cfg, (list, tuple)):
        for item in cfg:
            yield from _datasets(item)


def dataset_roots(cfg: Mapping, keys: Sequence[str] = DATALOADERS) -> dict:
    """``{dataloader key: [data_root, ...]}`` of the dataloaders in ``keys``."""
    roots = {}
    for key in keys:
        loader = cfg.get(key)
        if isinstance(loader, Mapping):
            found = [d['data_root'] for d in _datasets(loader.get('dataset'))
                     if isinstance(d.get('data_root'), str) and d['data_root']]
            if found:
                roots[key] = found
    return roots


def _replace_root(value: Any, old_roots: Sequence[str], new_root: str) -> Any:
    if isinstance(value, Mapping):
        for k in list(value.keys()):
            if k == 'data_root' and isinstance(value[k], str):
                value[k] = new_root
            else:
                value[k] = _replace_root(value[k], old_roots, new_root)
        return value
    if isinstance(value, list):
        return [_replace_root(v, old_roots, new_root) for v in value]
    if isinstance(value, tuple):
        return tuple(_replace_root(v, old_roots, new_root) for v in value)
    if isinstance(value, str):
        for old in old_roots:
            if value.startswith(old):
                rest = value[len(old):].lstrip('/')
                return osp.join(new_root, rest) if rest else new_root
    return value


def override_data_root(cfg: Any, new_root: str) -> None:
    """Point every dataset (and evaluator files under the old root) at ``new_root``.

    ``--cfg-options data_root=/data/imagenet`` thus moves a whole config to another dataset
    location with one option, although mmengine has already copied the base config's
    ``data_root`` into every dataloader.
    """
    old_roots = sorted({r for roots in dataset_roots(cfg).values() for r in roots},
                       key=len, reverse=True)
    for key in DATALOADERS + EVALUATORS:
        if cfg.get(key) is not None:
            cfg[key] = _replace_root(cfg[key], old_roots, new_root)
    cfg['data_root'] = new_root


def check_data_roots(cfg: Mapping, keys: Sequence[str]) -> None:
    """Raise a FileNotFoundError naming the first ``data_root`` of ``keys`` that is missing."""
    for key, roots in dataset_roots(cfg, keys).items():
        for root in roots:
            if '://' in root or osp.isdir(root):
                continue
            hint = ('generate the demo data with `python tools/make_demo_data.py --out data/demo`'
                    if 'demo' in root else 'point the config at your copy with '
                    '`--cfg-options data_root=/path/to/dataset`')
            raise FileNotFoundError(f'{key}: data_root {root!r} does not exist '
                                    f'(config {getattr(cfg, "filename", "?")}); {hint}')


def pop_data_root(cfg_options: Optional[dict]) -> Optional[str]:
    """Take ``data_root`` out of ``--cfg-options`` (it is applied by override_data_root)."""
    if not cfg_options or 'data_root' not in cfg_options:
        return None
    return str(cfg_options.pop('data_root'))


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """The options ``tools/train.py`` and ``tools/test.py`` share: ``--work-dir``,
    ``--cfg-options``, ``--launcher``, ``--local-rank``, ``--compile`` and ``--verbose``."""
    from mmengine.config import DictAction
    parser.add_argument('--work-dir', help='directory for logs and checkpoints')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value; data_root=PATH moves every '
                        'dataset to PATH')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--compile', action='store_true',
                        help='run the model compiled by torch.compile (sets the config key '
                        '"compile", which mmengine reads)')
    parser.add_argument('--verbose', action='store_true',
                        help="print mmengine's environment dump and the full config (they are "
                        'always in the log file)')


def apply_runner_args(cfg: Any, args: argparse.Namespace) -> Any:
    """Apply the options of :func:`add_runner_args` to ``cfg`` (in place, returned).

    ``data_root`` in ``--cfg-options`` moves every dataset (:func:`override_data_root`); an
    override whose parent does not exist is refused (:func:`check_cfg_options`); the work
    directory defaults to ``work_dirs/<config name>`` as in mmpretrain and mmdet.
    """
    set_local_rank_env(args.local_rank)
    cfg_options = dict(args.cfg_options or {})
    data_root = pop_data_root(cfg_options)
    check_cfg_options(cfg, cfg_options)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root is not None:
        override_data_root(cfg, data_root)
    cfg.launcher = args.launcher
    if getattr(args, 'compile', False):  # tools that run no model (the data scan) lack it
        enable_compile(cfg)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def add_dump_results(cfg: Any, out: str) -> Any:
    """Also dump every test prediction to the pickle file ``out`` (mmengine's ``DumpResults``
    beside the config's evaluators, as ``tools/test.py --out`` of mmpretrain and mmdet).

    Raises:
        ValueError: If ``out`` is not a ``.pkl`` / ``.pickle`` path.
    """
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file, got {out!r}')
    evaluators = cfg.test_evaluator
    if not isinstance(evaluators, (list, tuple)):
        evaluators = [evaluators]
    cfg.test_evaluator = [*evaluators, dict(type='DumpResults', out_file_path=out)]
    return cfg


def set_local_rank_env(local_rank: int) -> None:
    """Older launchers pass ``--local-rank``; mmengine reads the LOCAL_RANK variable."""
    os.environ.setdefault('LOCAL_RANK', str(local_rank))
