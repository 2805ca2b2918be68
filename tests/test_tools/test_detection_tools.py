"""The demo detector through tools/dist_train.sh (2 gloo processes) and tools/test.py, and the
demo COCO set (subprocesses, as a user runs them)."""
import glob
import json
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from kw_mm.demo_data.coco import CLASSES, write_coco_set

from tests.helpers.tool_runs import ROOT, check, run

DEMO_DET = osp.join(ROOT, 'configs', 'demo', 'mask-rcnn_kw-r18_demo-coco.py')


def test_demo_configs_fix_their_seed():
    """make demo prints the same top-1 and AP on every run of a machine: both demo configs
    (and the rival's demo detector built on the KW one) fix the seed."""
    for name in ('kw1x-resnet18_demo-cls.py', 'mask-rcnn_kw-r18_demo-coco.py',
                 'mask-rcnn_dyconv-r18_demo-coco.py'):
        cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', name))
        assert cfg.get('randomness', {}).get('seed') == 0, name


# ---------------------------------------------------------------------- the demo COCO set
def test_demo_coco_set_is_deterministic_and_valid(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    a = write_coco_set(str(tmp_path / 'a'), num_train=6, num_val=3)
    b = write_coco_set(str(tmp_path / 'b'), num_train=6, num_val=3)
    for key in ('train_ann', 'val_ann'):
        assert open(a[key], 'rb').read() == open(b[key], 'rb').read()
    for name in sorted(os.listdir(a['train_img'])):
        assert open(osp.join(a['train_img'], name), 'rb').read() == \
            open(osp.join(b['train_img'], name), 'rb').read()
    other = write_coco_set(str(tmp_path / 'c'), num_train=6, num_val=3, seed=1)
    assert open(other['train_ann'], 'rb').read() != open(a['train_ann'], 'rb').read()

    coco = COCO(a['train_ann'])
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == 6
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        assert 128 <= info['width'] <= 160 and 128 <= info['height'] <= 160
        pixels = np.asarray(Image.open(osp.join(a['train_img'], info['file_name'])))
        assert pixels.shape == (info['height'], info['width'], 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= 3
        for ann in anns:
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= info['width'] and y + h <= info['height']
            mask = coco.annToMask(ann)
            # the polygon is the drawn shape: its pixels have one colour, unlike the background
            inside = pixels[mask.astype(bool)].astype(int)
            assert mask.sum() == pytest.approx(ann['area'], rel=0.15)
            assert np.median(np.abs(inside - np.median(inside, axis=0)).sum(axis=1)) == 0
            rle = mask_utils.encode(np.asfortranarray(mask))
            box = mask_utils.toBbox(rle)
            assert box == pytest.approx([x, y, w, h], abs=1.5)


# ---------------------------------------------------------------------- dist_train + test.py
@pytest.fixture(scope='module')
def demo_det(tmp_path_factory):
    """The demo detector trained for 2 epochs of 2 iterations by 2 gloo processes, from a
    kw_mm classification checkpoint of its backbone: one run of tools/dist_exit_check.py."""
    tmp = tmp_path_factory.mktemp('demo_det')
    proc = run([sys.executable, 'tools/dist_exit_check.py', '--runs', '1', '--out', str(tmp)])
    return dict(proc=proc, work_dir=tmp / 'run_00', tmp=tmp,
                paths=dict(data_root=str(tmp / 'data' / 'coco')))


@pytest.mark.slow
def test_dist_exit_check_counts_one_clean_exit(demo_det):
    """The script exits 0 and says so only if the torchrun launch exited 0 (no process of the
    run died at teardown)."""
    check(demo_det['proc'])
    assert demo_det['proc'].stdout.splitlines()[-2:] == [
        'run 1/1: exit 0', f"1/1 runs exited 0 (2 processes each; outputs in {demo_det['tmp']})"]


@pytest.mark.slow
def test_dist_train_demo_detector_two_gloo_processes(demo_det):
    check(demo_det['proc'])
    work_dir = demo_det['work_dir']
    log = open(glob.glob(str(work_dir / '*' / '*.log'))[0]).read()
    assert 'gloo' in log
    assert re.search(r'KWFinetuneHook: KernelWarehouse attention initialization disabled .*'
                     r'temperature t = 0 on \d+ KW attentions of MaskRCNN', log)
    assert log.count('KWFinetuneHook: KernelWarehouse attention initialization') == 1
    # 8 images, 2 processes x batch 2: 2 iterations per epoch, 2 epochs, no unused parameters
    rows = [json.loads(line)
            for line in open(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))[0])]
    losses = [r for r in rows if 'loss' in r]
    assert [r['iter'] for r in losses] == [1, 2, 3, 4]
    assert all(np.isfinite(r['loss']) for r in losses)
    assert any('coco/bbox_mAP' in r for r in rows) and any('coco/segm_mAP' in r for r in rows)
    assert osp.basename(open(work_dir / 'last_checkpoint').read().strip()) == 'epoch_2.pth'


@pytest.mark.slow
def test_test_py_prints_coco_box_and_mask_ap(demo_det):
    check(demo_det['proc'])
    ckpt = open(demo_det['work_dir'] / 'last_checkpoint').read().strip()
    proc = check(run([sys.executable, 'tools/test.py', DEMO_DET, ckpt, '--work-dir',
                      str(demo_det['tmp'] / 'test'), '--cfg-options',
                      f"data_root={demo_det['paths']['data_root']}"]))
    out = proc.stdout + proc.stderr
    # pycocotools' summary tables for both tasks, then the kw_mm summary
    assert 'Evaluating bbox...' in out and 'Evaluating segm...' in out
    assert out.count('Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all') >= 2
    for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP_75'):
        match = re.search(re.escape(key) + r'\s+([0-9.]+)', proc.stdout)
        assert match, (key, proc.stdout)
        assert 0.0 <= float(match.group(1)) <= 1.0


# ---------------------------------------------------------------------- released checkpoint
@pytest.mark.slow  # starts a subprocess
def test_released_checkpoint_converts_and_initializes_the_detector(tmp_path):
    """Step 1 and the init of step 2 of docs/detection.md: a checkpoint in the reference
    release's format (random tensors with the released keys and shapes of kw1x_resnet50)
    goes through the converter and fills every tensor of the KW R50 detector's backbone."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    register_all_modules(init_default_scope=False)
    shapes = json.load(open(osp.join(ROOT, 'tests', 'data', 'official_kw', 'statedict',
                                     'kw1x_resnet50.json')))
    g = torch.Generator().manual_seed(0)
    official = {k: (torch.zeros(s, dtype=torch.long) if k.endswith('num_batches_tracked')
                    else torch.randn(s, generator=g)) for k, s in shapes}
    src, dst = str(tmp_path / 'kw1x_resnet50.pth'), str(tmp_path / 'kw1x-resnet50_in1k.pth')
    torch.save(official, src)
    check(run([sys.executable, 'tools/model_converters/kw_official_to_mmpretrain.py', src, dst]))

    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mask-rcnn_kw-r50_1x_coco.py'))
    cfg.merge_from_dict({'model.backbone.init_cfg.checkpoint': dst})
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    converted = torch.load(dst, weights_only=True)['state_dict']
    backbone = detector.backbone.state_dict()
    expected = {k[len('backbone.'):]: v for k, v in converted.items()
                if k.startswith('backbone.')}
    assert backbone.keys() == expected.keys()
    assert [k for k, v in expected.items() if not torch.equal(backbone[k], v)] == []
    # the released warehouses are the detector's warehouses, tensor for tensor
    for i in range(4):
        assert torch.equal(backbone[f'warehouse_manager.weights.{i}'],
                           official[f'warehouse_manager.weights.{i}'])
