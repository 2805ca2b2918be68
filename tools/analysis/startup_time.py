"""Time from ``tools/train.py`` start to its first training iteration: the demo set against
a large ImageNet-layout set (hard links of the demo images with ``meta/*.txt`` annotation
files), to show that start-up does not grow with the data set.

Example (the measurement of the docs: 240,000 training + 10,000 validation images):
    python tools/analysis/startup_time.py --out-dir work_dirs/startup --train-images 240000

Each run of tools/train.py stops at its first iteration (kw_mm.StartupProbeHook); the runs of
the two sets alternate (``--repeat`` each) and the medians are compared. The files read below
the data root before the first iteration are counted too (they should be the first batch's
images and the annotation files, whatever the size of the set). Exit status 1 if the medians
are more than ``--max-difference`` seconds apart.
"""
import argparse
import os
import os.path as osp
import statistics
import sys

from kw_mm.analysis.startup import hardlink_imagenet, measure_startup, write_probe_config
from kw_mm.demo_data.classification import write_classification_set

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_CFG = osp.join(ROOT, 'configs', 'demo', 'kw1x-resnet18_demo-cls.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Start-up time against data set size')
    parser.add_argument('--out-dir', default='work_dirs/startup',
                        help='where the data sets, configs and runs go')
    parser.add_argument('--config', default=DEMO_CFG, help='classification config to train')
    parser.add_argument('--train-images', type=int, default=240000)
    parser.add_argument('--val-images', type=int, default=10000)
    parser.add_argument('--repeat', type=int, default=2, help='runs per data set')
    parser.add_argument('--max-difference', type=float, default=20.0,
                        help='seconds the medians may differ')
    args = parser.parse_args()
    for name in ('train_images', 'val_images', 'repeat'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be a positive integer, got '
                         f'{getattr(args, name)}')
    return args


def main() -> int:
    args = parse_args()
    out = osp.abspath(args.out_dir)
    demo_root = write_classification_set(osp.join(out, 'demo'))['data_root']
    big_root = osp.join(out, f'imagenet_{args.train_images}')
    print(f'building {args.train_images} + {args.val_images} hard links under {big_root} ...',
          flush=True)
    hardlink_imagenet(demo_root, big_root, args.train_images, args.val_images)
    sets = {'demo': demo_root, 'large': big_root}
    times = {name: [] for name in sets}
    records = {}
    for round_ in range(args.repeat):
        for name, root in sets.items():
            record_file = osp.join(out, f'probe_{name}.json')
            cfg = write_probe_config(args.config, root, record_file,
                                     osp.join(out, f'probe_{name}.py'))
            record = measure_startup(ROOT, cfg, record_file, osp.join(out, f'work_{name}'),
                                     count_under=root)
            times[name].append(record['seconds'])
            records[name] = record
            print(f'round {round_ + 1}: {name:5s} {record["train_samples"]:7d} training images:'
                  f' first iteration after {record["seconds"]:.1f} s ({record["opens"]} files '
                  f'opened, {record["listings"]} directories listed below the data root)',
                  flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    difference = medians['large'] - medians['demo']
    print(f'median start-up: demo set ({records["demo"]["train_samples"]} training images) '
          f'{medians["demo"]:.1f} s, large set ({records["large"]["train_samples"]}) '
          f'{medians["large"]:.1f} s: {difference:+.1f} s (allowed: {args.max_difference:g} s; '
          f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})')
    return 0 if abs(difference) <= args.max_difference else 1


if __name__ == '__main__':
    sys.exit(main())
