"""mmpretrain's model hub finds kw_mm's pretraining configs by name after ``import kw_mm``:
``list_models``, ``get_model`` (with a demo-sized checkpoint), ``inference_model`` and
``ImageClassificationInferencer``; kw_mm's own ``init_model`` loads by name strictly."""
import pytest
import torch
from mmpretrain import ImageClassificationInferencer, get_model, inference_model, list_models

import kw_mm  # noqa: F401 (registers the names)
from kw_mm import get_temperature
from kw_mm.apis import find_model, init_model
from kw_mm.apis.model_names import model_names
from kw_mm.cnn import KWConvNd
from kw_mm.demo_data.classification import CLASSES, write_classification_set
from kw_mm.utils.checkpoint import CheckpointMismatchError

DEMO_CLS = 'kw1x-resnet18_demo-cls'


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """A demo-sized checkpoint of the demo classifier (as the Runner saves it: weights and the
    class names) and one demo image."""
    tmp = tmp_path_factory.mktemp('by_name')
    paths = write_classification_set(str(tmp / 'data'), num_train=1, num_val=1, image_size=40)
    torch.manual_seed(0)
    model, _ = init_model(DEMO_CLS)
    checkpoint = str(tmp / 'demo_cls.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': {'dataset_meta': {'classes': list(CLASSES)}}}, checkpoint)
    return dict(checkpoint=checkpoint, image=f"{paths['val']}/circle/circle_0000.png",
                state_dict=model.state_dict())


def test_every_pretraining_config_is_listed_by_mmpretrain():
    names = model_names('classification')
    assert 'kw1x-resnet18_8xb32_in1k' in names and 'mask-rcnn_kw-r50_1x_coco' not in names
    listed = set(list_models())
    assert set(names) <= listed, sorted(set(names) - listed)
    assert 'mask-rcnn_kw-r50_1x_coco' not in listed  # detectors go through init_detector
    assert list_models('kw1x-resnet50_8xb') == ['kw1x-resnet50_8xb512-300e_in1k']
    assert 'kw1x-deit-tiny_4xb256_in1k' in listed  # and the other families


def test_get_model_by_name_builds_the_kw_classifier():
    model = get_model('kw4x-mobilenet-v2_8xb32-150e_in1k')
    kw_layers = [m for m in model.modules() if isinstance(m, KWConvNd)]
    assert kw_layers and sum(p.numel() for p in model.parameters()) == \
        find_model('kw4x-mobilenet-v2_8xb32-150e_in1k').metadata['Parameters']


def test_get_model_with_weights_then_inference(demo):
    model = get_model(DEMO_CLS, pretrained=demo['checkpoint'])
    for key, value in model.state_dict().items():
        assert torch.equal(value, demo['state_dict'][key]), key
    assert get_temperature(model) == 0.0  # a trained model's attentions
    result = inference_model(model, demo['image'])
    assert result['pred_class'] in CLASSES and len(result['pred_scores']) == len(CLASSES)
    inferencer = ImageClassificationInferencer(DEMO_CLS, pretrained=demo['checkpoint'])
    again = inferencer(demo['image'])[0]
    assert again['pred_label'] == result['pred_label']


def test_name_without_weights_says_random_initialization():
    with pytest.warns(UserWarning, match='Unable to find pre-defined checkpoint'):
        get_model('kw1x-resnet18_8xb32_in1k', pretrained=True)
    with pytest.warns(UserWarning, match='no weights given, the model keeps its random'):
        init_model('kw1x-resnet18_8xb32_in1k')


def test_kw_mm_loads_by_name_strictly(demo, tmp_path):
    model, t = init_model(DEMO_CLS, demo['checkpoint'])
    assert t == 0.0
    other = str(tmp_path / 'other.pth')
    torch.save(init_model('kw2x-resnet18_8xb32_in1k')[0].state_dict(), other)
    with pytest.raises(CheckpointMismatchError, match=r'other\.pth .* but the model of '
                       r'.*kw1x-resnet18_demo-cls\.py expects'):
        init_model(DEMO_CLS, other)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"unknown kw_mm model 'kw1x-resnet18_in1k'; close "
                       r'matches: .*kw1x-resnet18_8xb32_in1k'):
        init_model('kw1x-resnet18_in1k')
