"""Bad images named: when the loader meets one, or all of them by a full scan.

Training does not read the data set before its first iteration (its start-up time would grow
with the data set: 1.33M ImageNet files on every rank at every start or resume). Instead
:func:`name_bad_images` makes every dataloader load its images with
:class:`kw_mm.datasets.LoadImageFromFile`, which names the file and its dataset index when it
cannot read one. The full scan (:func:`check_dataloader_images`, ``tools/misc/verify_dataset.py``)
reads each file's size and image header, or decodes it whole (``decode=True``), in parallel
threads, each process of a multi-process launch a share of the files.
"""
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

#: How many unreadable files the error message names.
SHOWN = 5
#: The toolboxes' image loading transform, under the names a config may give it.
TOOLBOX_LOADERS = ('LoadImageFromFile', 'mmpretrain.LoadImageFromFile',
                   'mmdet.LoadImageFromFile', 'mmcv.LoadImageFromFile')
#: kw_mm's transform that names the file it cannot read.
NAMING_LOADER = 'kw_mm.LoadImageFromFile'


def _pipelines(node: Any) -> Iterable[list]:
    """Every ``pipeline`` list inside a dataloader or dataset config (wrappers included)."""
    if isinstance(node, Mapping):
        if isinstance(node.get('pipeline'), list):
            yield node['pipeline']
        for value in node.values():
            yield from _pipelines(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _pipelines(value)


def name_bad_images(cfg: Any, keys: Iterable[str]) -> int:
    """Load the images of the dataloaders ``keys`` with :data:`NAMING_LOADER`.

    Every pipeline step of the toolboxes' ``LoadImageFromFile`` (same arguments) is replaced in
    place, so an unreadable image stops the run with its path and dataset index.

    Returns:
        int: The number of pipeline steps replaced.
    """
    replaced = 0
    for key in keys:
        for pipeline in _pipelines(cfg.get(key)):
            for step in pipeline:
                if isinstance(step, Mapping) and step.get('type') in TOOLBOX_LOADERS:
                    step['type'] = NAMING_LOADER
                    replaced += 1
    return replaced


def image_problem(path: str, decode: bool = False) -> Optional[str]:
    """Why ``path`` cannot be an image (missing, empty, no known image header, or with
    ``decode`` pixels that do not decode), or None."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return 'missing'
    if size == 0:
        return '0 bytes'
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            img.size  # noqa: B018 - parsed from the header
            if decode:
                img.load()
    except UnidentifiedImageError:
        return f'{size} bytes, not an image file PIL can identify'
    except Exception as err:  # noqa: BLE001 - any reader error is a bad image
        what = 'undecodable data' if decode else 'unreadable header'
        return f'{size} bytes, {what} ({type(err).__name__}: {err})'
    return None


def check_images(paths: Sequence[str], workers: int = 8, progress: bool = True,
                 decode: bool = False) -> List[Tuple[str, str]]:
    """``[(path, problem), ...]`` of the unreadable files among ``paths``, in their order.

    Args:
        paths (Sequence[str]): Image files.
        workers (int): Threads reading the files. Defaults to 8 (the work is file I/O).
        progress (bool): Show mmengine's progress bar. Defaults to True.
        decode (bool): Decode the pixels too (finds truncated data). Defaults to False: the
            size and the image header only.
    """
    bar = None
    if progress and paths:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(paths))
    problems = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda p: image_problem(p, decode), paths)
        for path, problem in zip(paths, results):
            if problem is not None:
                problems.append((path, problem))
            if bar is not None:
                bar.update()
    if bar is not None:
        print(flush=True)  # mmengine's bar leaves the cursor on its line
    return problems


def dataset_image_paths(dataset: Any) -> List[str]:
    """The image file of every sample of a built mmengine dataset (wrappers included), each
    once, in the dataset's order."""
    seen, paths = set(), []
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        path = info.get('img_path') if isinstance(info, Mapping) else None
        if path and path not in seen:
            seen.add(path)
            paths.append(path)
    return paths


def _gather(problems: List[Tuple[str, str]], world_size: int) -> List[Tuple[str, str]]:
    """Every process's problems, on every process (in file order of the shares)."""
    if world_size == 1:
        return problems
    import torch.distributed as dist
    shares: List[Any] = [None] * world_size
    dist.all_gather_object(shares, problems)
    return [item for share in shares for item in share]


def check_dataloader_images(cfg: Mapping, keys: Iterable[str], progress: bool = True,
                            decode: bool = False, rank: int = 0, world_size: int = 1,
                            workers: int = 8) -> int:
    """Build the datasets of the dataloaders ``keys`` of ``cfg`` and check every image.

    Args:
        cfg (Mapping): The config (its default scope set).
        keys (Iterable[str]): Dataloaders to check, e.g. ``['train_dataloader']``.
        progress (bool): Say what is checked and show a progress bar. Defaults to True.
        decode (bool): Decode every image (see :func:`check_images`). Defaults to False.
        rank (int): This process's rank; it checks every ``world_size``-th file from ``rank``.
        world_size (int): Processes sharing the files (a torch.distributed group joins their
            findings). Defaults to 1.
        workers (int): Reading threads per process. Defaults to 8.

    Returns:
        int: The number of images checked (by all processes).

    Raises:
        ValueError: One line naming the unreadable images (up to :data:`SHOWN`, with the count).
    """
    from mmengine.registry import DATASETS
    checked = 0
    for key in keys:
        loader = cfg.get(key)
        if not isinstance(loader, Mapping) or loader.get('dataset') is None:
            continue
        dataset = DATASETS.build(loader['dataset'])
        paths = dataset_image_paths(dataset)
        share = paths[rank::world_size]
        if progress:
            split = f', {len(share)} in this process of {world_size}' if world_size > 1 else ''
            print(f'checking the {len(paths)} images of {key}{split}', flush=True)
        problems = _gather(check_images(share, workers=workers, progress=progress,
                                        decode=decode), world_size)
        checked += len(paths)
        if problems:
            shown = '; '.join(f'{p} ({why})' for p, why in problems[:SHOWN])
            more = f'; ... {len(problems)} in all' if len(problems) > SHOWN else ''
            root = osp.commonpath([p for p, _ in problems]) if len(problems) > 1 else None
            where = f' under {root}' if root else ''
            raise ValueError(f'{key}: {len(problems)} of {len(paths)} images cannot be read'
                             f'{where}: {shown}{more}; fix or remove them')
    return checked
