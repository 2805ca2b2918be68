"""Start-up time of training against the size of the data set.

:func:`hardlink_imagenet` builds a large ImageNet-layout set (class folders and mmpretrain's
``meta/{train,val}.txt`` annotation files) out of hard links to the demo set's images, so
hundreds of thousands of files cost directory entries only. :func:`measure_startup` runs
``tools/train.py`` on a config until its first training iteration
(:class:`~kw_mm.runner.startup_probe.StartupProbeHook`) and returns the probe's record.
``tools/analysis/startup_time.py`` compares the demo set with a 240,000-image set this way.
"""
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

#: What a probe config adds to the config it measures (``{base}``, ``{root}``, ``{hooks}``).
PROBE_CFG = """
_base_ = {base!r}
custom_imports = dict(imports=['kw_mm', 'kw_mm.runner.startup_probe'],
                      allow_failed_imports=False)
train_dataloader = dict(dataset=dict(data_root={root!r}))
val_dataloader = dict(dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
custom_hooks = {hooks!r}
"""


def _class_images(split_dir: str) -> Dict[str, List[str]]:
    return {c: sorted(os.listdir(osp.join(split_dir, c))) for c in sorted(os.listdir(split_dir))
            if osp.isdir(osp.join(split_dir, c))}


def hardlink_imagenet(source_root: str, out_root: str, num_train: int,
                      num_val: int) -> Dict[str, int]:
    """An ImageNet-layout set of ``num_train`` + ``num_val`` hard links to the images of
    ``source_root`` (``train/<class>/*``, ``val/<class>/*``), with ``meta/train.txt`` and
    ``meta/val.txt`` (``<class>/<file> <label>`` lines, as mmpretrain's ImageNet reads them).

    Class folders and labels are those of the source; the files cycle over its images. An
    existing set with the same counts is kept.

    Returns:
        dict: ``{'train': num_train, 'val': num_val}``.
    """
    meta = osp.join(out_root, 'meta')
    done = osp.join(meta, 'counts.json')
    wanted = dict(train=num_train, val=num_val)
    if osp.isfile(done):
        with open(done) as f:
            if json.load(f) == wanted:
                return wanted
    os.makedirs(meta, exist_ok=True)
    for split, count in wanted.items():
        sources = _class_images(osp.join(source_root, split))
        classes = list(sources)
        lines = []
        for label, name in enumerate(classes):
            os.makedirs(osp.join(out_root, split, name), exist_ok=True)
        for i in range(count):
            label = i % len(classes)
            name = classes[label]
            files = sources[name]
            src = osp.join(source_root, split, name, files[(i // len(classes)) % len(files)])
            rel = f'{name}/{name}_{i:07d}{osp.splitext(src)[1]}'
            dst = osp.join(out_root, split, rel)
            if not osp.exists(dst):
                os.link(src, dst)
            lines.append(f'{rel} {label}\n')
        with open(osp.join(meta, f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    with open(done, 'w') as f:
        json.dump(wanted, f)
    return wanted


def write_probe_config(base_config: str, data_root: str, out_file: str, path: str) -> str:
    """A config training ``base_config`` on ``data_root`` that stops at its first iteration
    and writes the probe's record to ``out_file``; written to ``path`` (returned)."""
    from mmengine.config import Config
    hooks = [dict(h) for h in Config.fromfile(base_config).get('custom_hooks') or []]
    hooks.append(dict(type='kw_mm.StartupProbeHook', out_file=osp.abspath(out_file)))
    with open(path, 'w') as f:
        f.write(PROBE_CFG.format(base=osp.abspath(base_config), root=osp.abspath(data_root),
                                 hooks=hooks))
    return path


def measure_startup(repo_root: str, probe_config: str, out_file: str, work_dir: str,
                    count_under: Optional[str] = None,
                    extra_args: Sequence[str] = (), timeout: int = 1800) -> dict:
    """Run ``tools/train.py probe_config`` until its first iteration; the probe's record.

    Args:
        repo_root (str): The repository (tools/train.py is run from there).
        probe_config (str): A config from :func:`write_probe_config`.
        out_file (str): Its probe's record file.
        work_dir (str): The run's work dir (overwritten).
        count_under (str, optional): Count file opens and listings below this directory.
        extra_args (Sequence[str]): More arguments of tools/train.py.
        timeout (int): Seconds before the run is given up. Defaults to 1800.

    Returns:
        dict: The record (``seconds``, ``train_samples``, ``opens``, ...) plus ``wall`` (the
        seconds until the process ended).
    """
    from kw_mm.runner.startup_probe import ROOT_VARIABLE, START_VARIABLE
    if osp.exists(out_file):
        os.remove(out_file)
    env = dict(os.environ)
    env['PYTHONPATH'] = repo_root + (os.pathsep + env['PYTHONPATH']
                                     if env.get('PYTHONPATH') else '')
    if count_under:
        env[ROOT_VARIABLE] = osp.abspath(count_under)
    start = time.time()
    env[START_VARIABLE] = repr(start)
    proc = subprocess.run([sys.executable, 'tools/train.py', probe_config, '--work-dir',
                           work_dir, '--overwrite', *extra_args], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    wall = time.time() - start
    if proc.returncode != 0 or not osp.isfile(out_file):
        raise RuntimeError(f'tools/train.py {probe_config} failed (exit {proc.returncode}):\n'
                           f'{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}')
    with open(out_file) as f:
        record = json.load(f)
    record['wall'] = wall
    return record
