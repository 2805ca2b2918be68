"""Rival models through the tools as a user runs them: DY-Conv, ODConv and KW* train a few
iterations of the demo set with their temperature annealed and logged, and a DY-Conv Mask R-CNN
runs the demo detection path end to end."""
import glob
import json
import re
import sys

import pytest
import torch

from tests.helpers.tool_runs import ROOT, check, run

#: The KW tool tests' tiny demo config (2 classes, 2 epochs of 4 iterations) with a rival backbone.
RIVAL_CFG = """
_base_ = {base!r}
model = dict(backbone=dict(_delete_=True, **{backbone!r}), head=dict(in_channels={channels}))
custom_hooks = [{hook!r}]
# One checkpoint on disk (a DY-Conv ResNet18 checkpoint with its optimizer state is 540 MB).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
"""

#: 8 images (tests/test_tools/conftest.py's tiny set), batch 2: 4 iterations per epoch, T = 1 epoch. DY-Conv / ODConv: 30 -> 1 (the ODConv
#: release's formula); KW*: KW's 1 -> 0.
SOFTMAX_T = ('softmax_temperature', [1 + 29 * max(0, (4 - i) / 4) for i in range(1, 9)],
             'DynamicConvTemperatureHook: t falls from 30 to 1')
KW_T = ('kw_temperature', [max(0, 1 - i / 4) for i in range(1, 9)],
        'KWTemperatureHook: t falls from 1 to 0')
MODELS = {
    'dyconv': (dict(type='kw_mm.DynamicResNet', depth=18, method='dyconv'), 512,
               dict(type='kw_mm.DynamicConvTemperatureHook', anneal_epochs=1), SOFTMAX_T),
    'odconv': (dict(type='kw_mm.DynamicMobileNetV2', method='odconv', widen_factor=0.5), 1280,
               dict(type='kw_mm.DynamicConvTemperatureHook', anneal_epochs=1), SOFTMAX_T),
    'kwstar': (dict(type='kw_mm.KWMobileNetV2', budget=4, widen_factor=0.5,
                    omni_attention=True), 1280,
               dict(type='kw_mm.KWTemperatureHook', anneal_epochs=1), KW_T),
}


@pytest.mark.slow
@pytest.mark.parametrize('method', sorted(MODELS))
def test_train_py_anneals_and_logs_the_temperature(tiny, method):
    tmp, base = tiny['tmp'], tiny['cfg']
    backbone, channels, hook, (key, expected, message) = MODELS[method]
    cfg = tmp / f'{method}_tiny.py'
    cfg.write_text(RIVAL_CFG.format(base=base, backbone=backbone, channels=channels, hook=hook))
    work_dir = tmp / method
    proc = check(run([sys.executable, 'tools/train.py', str(cfg), '--work-dir', str(work_dir)]))
    rows = [json.loads(line)
            for line in open(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))[0])]
    train = [r for r in rows if 'loss' in r]
    assert [r[key] for r in train] == pytest.approx(expected)
    assert all(r['loss'] == r['loss'] for r in train)  # finite, not NaN
    assert any('accuracy/top1' in r for r in rows)  # validated after the anneal
    assert message in proc.stdout + proc.stderr


@pytest.mark.slow
def test_dyconv_mask_rcnn_demo_detection_end_to_end(tmp_path):
    """The demo detection path with a DY-Conv backbone: a DY-Conv ResNet18 classification
    checkpoint loads strictly into Mask R-CNN, tools/train.py fine-tunes at t = 1 and
    validates with CocoMetric, tools/test.py prints box and mask AP."""
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    from kw_mm.demo_data.coco import write_coco_set
    register_all_modules(init_default_scope=False)
    paths = write_coco_set(str(tmp_path / 'data'), num_train=4, num_val=2)
    torch.manual_seed(0)
    cls = MODELS.build(dict(type='ImageClassifier',
                            backbone=dict(type='kw_mm.DynamicResNet', depth=18, method='dyconv'),
                            neck=dict(type='GlobalAveragePooling'),
                            head=dict(type='LinearClsHead', num_classes=6, in_channels=512)))
    ckpt = str(tmp_path / 'dyconv_cls.pth')
    torch.save(dict(meta=dict(epoch=1), state_dict=cls.state_dict()), ckpt)
    config = f'{ROOT}/configs/demo/mask-rcnn_dyconv-r18_demo-coco.py'
    work_dir = tmp_path / 'work'
    proc = check(run([sys.executable, 'tools/train.py', config, '--work-dir', str(work_dir),
                      '--cfg-options', f"data_root={paths['data_root']}",
                      f'model.backbone.init_cfg.checkpoint={ckpt}', 'train_cfg.max_epochs=1',
                      'train_cfg.val_interval=1', 'train_dataloader.batch_size=2',
                      'default_hooks.logger.interval=1']))
    log = proc.stdout + proc.stderr
    assert re.search(r'DynamicConvFinetuneHook: softmax temperature t = 1 on 19 DY-Conv / '
                     r'ODConv attentions of MaskRCNN', log)
    rows = [json.loads(line)
            for line in open(glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))[0])]
    assert [r['iter'] for r in rows if 'loss' in r] == [1, 2]
    assert all(r['loss'] == r['loss'] for r in rows if 'loss' in r)
    assert any('coco/bbox_mAP' in r for r in rows) and any('coco/segm_mAP' in r for r in rows)
    last = open(work_dir / 'last_checkpoint').read().strip()
    proc = check(run([sys.executable, 'tools/test.py', config, last, '--work-dir',
                      str(tmp_path / 'test'), '--cfg-options',
                      f"data_root={paths['data_root']}"]))
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        match = re.search(re.escape(key) + r'\s+([0-9.]+)', proc.stdout)
        assert match and 0.0 <= float(match.group(1)) <= 1.0, proc.stdout[-2000:]
