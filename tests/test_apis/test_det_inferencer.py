"""kw_mm.apis.init_detector: mmdet's DetInferencer on kw_mm's detection configs, with strict
weights, the KW temperature and mmdet's DetLocalVisualizer pictures."""
import glob
import os.path as osp

import pytest
import torch
from mmdet.apis import DetInferencer

from kw_mm import get_temperature
from kw_mm.apis import init_detector, init_model
from kw_mm.demo_data.coco import write_coco_set
from kw_mm.utils.checkpoint import CheckpointMismatchError
from tests.helpers import REPO_ROOT

DEMO_DET = osp.join(REPO_ROOT, 'configs', 'demo', 'mask-rcnn_kw-r18_demo-coco.py')


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """Two demo COCO validation images and a demo-sized detector checkpoint (seeded weights)."""
    tmp = tmp_path_factory.mktemp('det_inferencer')
    paths = write_coco_set(str(tmp / 'data'), num_train=1, num_val=2)
    torch.manual_seed(0)
    model, _ = init_model(DEMO_DET)
    checkpoint = str(tmp / 'det.pth')
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    images = sorted(glob.glob(osp.join(paths['val_img'], '*')))
    return dict(tmp=tmp, cfg=DEMO_DET, checkpoint=checkpoint, images=images)


def test_detector_by_name_from_checkpoint_predicts_and_draws(demo):
    inferencer = init_detector('mask-rcnn_kw-r18_demo-coco', demo['checkpoint'], device='cpu',
                               show_progress=False)
    assert isinstance(inferencer, DetInferencer)
    assert inferencer.kw_temperature == 0.0 and get_temperature(inferencer.model) == 0.0
    assert inferencer.model.dataset_meta['classes'] == ('circle', 'square', 'triangle')
    reference = torch.load(demo['checkpoint'], weights_only=True)['state_dict']
    for key, value in inferencer.model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    out_dir = demo['tmp'] / 'out'
    result = inferencer(demo['images'][0], out_dir=str(out_dir), pred_score_thr=0.0)
    pred = result['predictions'][0]
    assert set(pred) >= {'labels', 'scores', 'bboxes', 'masks'}
    assert len(pred['labels']) == len(pred['bboxes']) == len(pred['masks']) > 0
    picture = out_dir / 'vis' / osp.basename(demo['images'][0])
    assert picture.is_file() and picture.stat().st_size > 1000


def test_weights_of_another_config_fail_strictly(demo, tmp_path):
    other = osp.join(REPO_ROOT, 'configs', 'demo', 'kw1x-resnet18_demo-cls.py')
    model, _ = init_model(other)
    checkpoint = str(tmp_path / 'cls.pth')
    torch.save(model.state_dict(), checkpoint)
    with pytest.raises(CheckpointMismatchError, match=r'cls\.pth \(2 keys the model does not '
                       r'have, e\.g\. head\.fc\.weight\) but the model of .*mask-rcnn_kw-r18_'
                       r'demo-coco\.py expects .*\n  missing in checkpoint: neck\.'):
        init_detector(demo['cfg'], checkpoint, device='cpu')


def test_no_weights_says_random_initialization(demo):
    with pytest.warns(UserWarning, match='no weights given, the model keeps its random '
                      'initialization'):
        inferencer = init_detector('mask-rcnn_kw-r18_demo-coco', device='cpu',
                                   show_progress=False)
    assert inferencer.model.dataset_meta['classes'] == ('circle', 'square', 'triangle')


def test_unknown_or_classification_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown kw_mm model 'mask-rcnn_kw-r50_coco'; close "
                       r'matches: mask-rcnn_kw-r50_1x_coco'):
        init_detector('mask-rcnn_kw-r50_coco')
    with pytest.raises(ValueError, match=r"'kw1x-resnet18_8xb32_in1k' is a classification model"):
        init_detector('kw1x-resnet18_8xb32_in1k')
