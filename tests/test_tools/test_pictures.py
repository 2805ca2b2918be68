"""Pictures as a user makes them (subprocesses): tools/test.py --show-dir for an mmpretrain and
an mmdet config, and tools/analysis/vis_detections.py (the last step of ``make demo``)."""
import glob
import os.path as osp
import sys

import pytest
import torch
from PIL import Image

from kw_mm.apis import init_model
from kw_mm.demo_data.classification import write_classification_set
from kw_mm.demo_data.coco import write_coco_set
from tests.helpers.tool_runs import ROOT, check, run

DEMO_CLS = osp.join(ROOT, 'configs', 'demo', 'kw1x-resnet18_demo-cls.py')
DEMO_DET = osp.join(ROOT, 'configs', 'demo', 'mask-rcnn_kw-r18_demo-coco.py')


def seeded_checkpoint(config: str, path: str) -> str:
    torch.manual_seed(0)
    model, _ = init_model(config)
    torch.save({'state_dict': model.state_dict()}, path)
    return path


def assert_pictures(paths, count):
    assert len(paths) == count, paths
    for path in paths:
        with Image.open(path) as image:
            assert min(image.size) >= 32 and image.mode == 'RGB', path


@pytest.fixture(scope='module')
def det(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('det_pictures')
    root = write_coco_set(str(tmp / 'data'), num_train=1, num_val=3)['data_root']
    return dict(tmp=tmp, root=root,
                ckpt=seeded_checkpoint(DEMO_DET, str(tmp / 'det.pth')))


@pytest.mark.slow
def test_vis_detections_writes_and_prints_pictures(det):
    out = det['tmp'] / 'vis_out'
    proc = check(run([sys.executable, 'tools/analysis/vis_detections.py', DEMO_DET,
                      det['ckpt'], '--out-dir', str(out), '--num-images', '2',
                      '--score-thr', '0', '--cfg-options', f"data_root={det['root']}"]))
    printed = [line for line in proc.stdout.splitlines() if line.endswith('.png')]
    assert_pictures(printed, 2)
    assert all(osp.dirname(p) == str(out / 'vis') for p in printed)


@pytest.mark.slow
def test_test_py_show_dir_draws_detections(det):
    show = det['tmp'] / 'show'
    check(run([sys.executable, 'tools/test.py', DEMO_DET, det['ckpt'], '--work-dir',
               str(det['tmp'] / 'work'), '--show-dir', str(show), '--cfg-options',
               f"data_root={det['root']}"]))
    assert_pictures(glob.glob(str(show / '*.png')), 3)


@pytest.mark.slow
def test_test_py_show_dir_draws_classifications(tmp_path):
    root = write_classification_set(str(tmp_path / 'data'), num_train=1, num_val=2,
                                    image_size=32)['data_root']
    ckpt = seeded_checkpoint(DEMO_CLS, str(tmp_path / 'cls.pth'))
    show = tmp_path / 'show'
    check(run([sys.executable, 'tools/test.py', DEMO_CLS, ckpt, '--work-dir',
               str(tmp_path / 'work'), '--show-dir', str(show), '--cfg-options',
               f'data_root={root}']))
    assert_pictures(glob.glob(str(show / '*.png')), 12)  # 6 classes x 2 images
