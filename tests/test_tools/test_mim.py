"""``mim train mmpretrain`` and ``mim test mmdet`` on kw_mm's configs from the repo root: mim runs
the toolboxes' own tools/train.py and tools/test.py (from their ``.mim`` folders), which find
kw_mm's modules through the ``kw_mm.`` scope of the configs. Tiny overrides: the demo images in
place of ImageNet and COCO, one iteration, the demo's three classes for the detector."""
import glob
import os.path as osp
import re
import sys

import pytest
import torch

from kw_mm.apis import init_model
from kw_mm.demo_data.classification import write_classification_set
from kw_mm.demo_data.coco import write_coco_set
from tests.helpers.tool_runs import ROOT, check, run

MIM = [sys.executable, '-m', 'mim']


@pytest.mark.slow
def test_mim_train_mmpretrain_kw_config(tmp_path):
    root = write_classification_set(str(tmp_path / 'data'), num_train=1, num_val=1,
                                    image_size=32, classes=('circle', 'square'))['data_root']
    # one epoch of a 10-epoch anneal, on purpose (the hook refuses an unfinished anneal otherwise)
    overrides = ['train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
                 'custom_hooks.0.allow_unfinished_anneal=True']
    for loader in ('train_dataloader', 'val_dataloader'):
        overrides += [f'{loader}.dataset.data_root={root}',
                      f'{loader}.dataset.metainfo.classes=[circle,square]',
                      f'{loader}.batch_size=2', f'{loader}.num_workers=0',
                      f'{loader}.persistent_workers=False']
    work_dir = tmp_path / 'work'
    proc = check(run(MIM + ['train', 'mmpretrain', 'configs/kw1x-resnet18_8xb32_in1k.py',
                            '--work-dir', str(work_dir), '--cfg-options'] + overrides,
                     timeout=1800))
    out = proc.stdout + proc.stderr
    assert 'mmpretrain/.mim/tools/train.py' in out.replace(osp.sep, '/')
    # the KW temperature hook of the config ran (t after the first of 10 anneal epochs' iters)
    assert re.search(r'kw_temperature: 0\.9000', out), out[-3000:]
    assert re.search(r'accuracy/top1: [0-9.]+', out)
    assert osp.isfile(work_dir / 'epoch_1.pth')


@pytest.mark.slow
def test_mim_test_mmdet_kw_config(tmp_path):
    root = write_coco_set(str(tmp_path / 'data'), num_train=1, num_val=2)['data_root']
    three_classes = ['model.roi_head.bbox_head.num_classes=3',
                     'model.roi_head.mask_head.num_classes=3']
    config = 'configs/mask-rcnn_kw-r50_1x_coco.py'
    torch.manual_seed(0)
    model, _ = init_model(osp.join(ROOT, config), cfg_options={
        k: int(v) for k, v in (o.split('=') for o in three_classes)})
    checkpoint = str(tmp_path / 'det.pth')
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    proc = check(run(MIM + [
        'test', 'mmdet', config, '--checkpoint', checkpoint, '--work-dir', str(tmp_path / 'w'),
        '--cfg-options', f'test_dataloader.dataset.data_root={root}/',
        'test_dataloader.dataset.ann_file=annotations/instances_val.json',
        'test_dataloader.dataset.data_prefix.img=val/',
        'test_dataloader.dataset.metainfo.classes=[circle,square,triangle]',
        f'test_evaluator.ann_file={root}/annotations/instances_val.json',
        'test_dataloader.dataset.pipeline.1.scale=(320,320)'] + three_classes, timeout=1800))
    out = proc.stdout + proc.stderr
    assert 'mmdet/.mim/tools/test.py' in out.replace(osp.sep, '/')
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert re.search(re.escape(key) + r': -?[0-9.]+', out), out[-3000:]
    assert glob.glob(str(tmp_path / 'w' / '*' / '*.log'))
