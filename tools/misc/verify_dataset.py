"""Check every image of a config's data sets once, before training on a new copy of them.

Training does not read the data set before its first iteration (a bad image is named, with
its dataset index, when the loader meets it); this tool finds all bad images at once. Run it
once per new copy of a data set.

Examples:
    python tools/misc/verify_dataset.py configs/kw1x-resnet50_8xb512-300e_in1k.py \\
        --cfg-options data_root=/data/imagenet
    python tools/misc/verify_dataset.py CONFIG --split train --header-only   # sizes + headers
    torchrun --nproc_per_node 8 tools/misc/verify_dataset.py CONFIG --launcher pytorch
                                              # 8 processes, each an eighth of the files

Each process reads its share of the files with ``--workers`` threads; the files are split
across the processes of a ``torchrun`` launch (gloo group, no GPU needed). The exit status is
1 when an image cannot be read, and one line names them.
"""
import argparse
import os
import sys

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

from kw_mm.runner.data_check import check_dataloader_images
from kw_mm.runner.launch import apply_runner_args, register_toolbox

SPLITS = {'train': 'train_dataloader', 'val': 'val_dataloader', 'test': 'test_dataloader'}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Check every image of a config\'s data sets')
    parser.add_argument('config', help='config file')
    parser.add_argument('--split', nargs='+', choices=sorted(SPLITS),
                        default=['train', 'val', 'test'], help='data sets to check')
    parser.add_argument('--header-only', action='store_true',
                        help='read file sizes and image headers only (faster; misses images '
                        'whose data is truncated)')
    parser.add_argument('--workers', type=int, default=8, help='reading threads per process')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value; data_root=PATH moves every '
                        'dataset to PATH')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='pytorch: one of several processes started by torchrun')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    args.work_dir, args.verbose = None, False
    if args.workers < 1:
        parser.error(f'--workers must be a positive integer, got {args.workers}')
    return args


def main() -> int:
    args = parse_args()
    cfg = apply_runner_args(Config.fromfile(args.config), args)
    scope = register_toolbox(cfg)
    init_default_scope(scope)
    rank, world_size = 0, 1
    if args.launcher == 'pytorch':
        import torch.distributed as dist
        dist.init_process_group(backend='gloo')
        rank, world_size = dist.get_rank(), dist.get_world_size()
    keys = [SPLITS[s] for s in dict.fromkeys(args.split)]
    if 'test_dataloader' in keys and cfg.get('test_dataloader') == cfg.get('val_dataloader') \
            and 'val_dataloader' in keys:
        keys.remove('test_dataloader')  # the same data set
    try:
        checked = check_dataloader_images(cfg, keys, progress=rank == 0,
                                          decode=not args.header_only, rank=rank,
                                          world_size=world_size, workers=args.workers)
    except ValueError as err:
        if rank == 0:
            print(err, file=sys.stderr, flush=True)
        return 1
    finally:
        if world_size > 1:
            import torch.distributed as dist
            dist.destroy_process_group()
    if rank == 0:
        how = 'sizes and headers' if args.header_only else 'decoded'
        print(f'all {checked} images of {", ".join(keys)} can be read ({how}, {world_size} '
              f'process{"es" if world_size > 1 else ""})', flush=True)
    return 0


if __name__ == '__main__':
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    sys.exit(main())
