"""Running the tools as a user does (subprocesses from the repo root), for the tool tests."""
import glob
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
from typing import List

from tests.helpers import REPO_ROOT as ROOT

DEMO_CLS = osp.join(ROOT, 'configs', 'demo', 'kw1x-resnet18_demo-cls.py')

#: A 2-class KW ResNet18 run of the demo classification config on a tiny set (see tiny_cls).
TINY_CFG = """
_base_ = {base!r}
classes = ('circle', 'square')
model = dict(head=dict(num_classes=2))
data_preprocessor = dict(num_classes=2)
train_dataloader = dict(batch_size=2,
                        dataset=dict(data_root={root!r}, metainfo=dict(classes=classes)))
val_dataloader = dict(batch_size=4,
                      dataset=dict(data_root={root!r}, metainfo=dict(classes=classes)))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=True, begin=0, end=100)]
custom_hooks = [dict(type='kw_mm.KWTemperatureHook', anneal_epochs=1)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=3))
"""


def tiny_cls(tmp) -> dict:
    """Two demo classes (4 train / 6 val images each, 32 px) under ``tmp/data`` and a config
    ``tmp/tiny_cls.py`` training KW ResNet18 on them for 2 epochs (T = 1 epoch)."""
    from kw_mm.demo_data.classification import write_classification_set
    paths = write_classification_set(str(tmp / 'data'), num_train=4, num_val=6, image_size=32,
                                     classes=('circle', 'square'))
    cfg = tmp / 'tiny_cls.py'
    cfg.write_text(TINY_CFG.format(base=DEMO_CLS, root=paths['data_root']))
    return dict(tmp=tmp, cfg=str(cfg), data_root=paths['data_root'])


def scalars(work_dir, last_run_only: bool = False) -> List[dict]:
    """The rows of every ``vis_data/scalars.json`` of a work dir (runs in time order), or of
    its last run only."""
    rows = []
    files = sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')))
    for path in files[-1:] if last_run_only else files:
        with open(path) as f:
            rows += [json.loads(line) for line in f]
    return rows


def free_port() -> int:
    """A free TCP port for torchrun's rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, timeout: int = 900, **env) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repo root with this interpreter and one thread per process."""
    full_env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1', **env)
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Fail with the end of the output when the command failed."""
    assert proc.returncode == 0, f'exit {proc.returncode}\n{proc.stdout[-3000:]}\n' \
                                 f'{proc.stderr[-5000:]}'
    return proc


def predictions(config: str, checkpoint: str, temperature: float) -> List[tuple]:
    """``(img_path, logits, label)`` of every test image of ``config`` for ``checkpoint`` at
    ``temperature``, computed here (the model's logits), without tools/test.py, its Runner or
    evaluator."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner, load_checkpoint

    from kw_mm import set_temperature
    from kw_mm.apis import build_model
    cfg = Config.fromfile(config)
    model = build_model(cfg).eval()
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    set_temperature(model, temperature)
    loader = Runner.build_dataloader(dict(cfg.test_dataloader, num_workers=0,
                                          persistent_workers=False))
    rows = []
    with torch.no_grad():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            logits = model(data['inputs'], mode='tensor')
            for sample, row in zip(data['data_samples'], logits):
                rows.append((sample.img_path, row, int(sample.gt_label)))
    return rows


def evaluate_top1(config: str, checkpoint: str, temperature: float) -> float:
    """Top-1 (%) of ``checkpoint`` on the config's test set at ``temperature``
    (:func:`predictions` against the labels)."""
    rows = predictions(config, checkpoint, temperature)
    assert len(rows) == 12  # 2 classes x 6 validation images
    return 100.0 * sum(int(logits.argmax()) == label for _, logits, label in rows) / len(rows)


def printed_top1(stdout: str) -> float:
    match = re.search(r'top-1 accuracy \(%\): ([0-9.]+)\s+\(2 classes, chance 50.00\)', stdout)
    assert match, stdout
    assert re.search(r'accuracy/top1\s+[0-9.]+', stdout)
    return float(match.group(1))
