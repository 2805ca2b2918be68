"""Bad data named before training: file sizes and image headers of every image of a dataset.

Without the check, a zero-byte or corrupt image stops a run mid-epoch with
``cv2.error ... !buf.empty() in function 'imdecode_'`` and no file name. The check is cheap: it
reads each file's size and its image header (PIL opens lazily: the header, not the pixels), in
parallel threads, with a progress bar. It does not decode the pixels, so an image whose header
is intact but whose data is truncated still passes.
"""
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

#: How many unreadable files the error message names.
SHOWN = 5


def image_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be an image (missing, empty, no known image header), or None."""
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
    except UnidentifiedImageError:
        return f'{size} bytes, not an image file PIL can identify'
    except Exception as err:  # noqa: BLE001 - any reader error is a bad image
        return f'{size} bytes, unreadable header ({type(err).__name__}: {err})'
    return None


def check_images(paths: Sequence[str], workers: int = 8,
                 progress: bool = True) -> List[Tuple[str, str]]:
    """``[(path, problem), ...]`` of the unreadable files among ``paths``, in their order.

    Args:
        paths (Sequence[str]): Image files.
        workers (int): Threads reading the headers. Defaults to 8 (the work is file I/O).
        progress (bool): Show mmengine's progress bar. Defaults to True.
    """
    bar = None
    if progress and paths:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(paths))
    problems = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for path, problem in zip(paths, pool.map(image_problem, paths)):
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


def check_dataloader_images(cfg: Mapping, keys: Iterable[str], progress: bool = True) -> int:
    """Build the datasets of the dataloaders ``keys`` of ``cfg`` and check every image.

    Returns:
        int: The number of images checked.

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
        if progress:
            print(f'checking the {len(paths)} images of {key} (--skip-data-check skips this)',
                  flush=True)
        problems = check_images(paths, progress=progress)
        checked += len(paths)
        if problems:
            shown = '; '.join(f'{p} ({why})' for p, why in problems[:SHOWN])
            more = f'; ... {len(problems)} in all' if len(problems) > SHOWN else ''
            root = osp.commonpath([p for p, _ in problems]) if len(problems) > 1 else None
            where = f' under {root}' if root else ''
            raise ValueError(f'{key}: {len(problems)} of {len(paths)} images cannot be read'
                             f'{where}: {shown}{more}; fix or remove them (or pass '
                             '--skip-data-check)')
    return checked
