"""The model index (model-index.yml -> configs/metafile.yml) and its reader, kw_mm.apis."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import yaml

from kw_mm.apis import (build_model, get_config_path, get_model, get_model_index, get_variant,
                        list_models, list_variants)
from kw_mm.apis.model_index import MIM_DIR

from tests.helpers import REPO_ROOT as ROOT

#: Every config a user can name (configs/, configs/demo/, configs/ablations/; _base_ files are
#: not models).
CONFIGS = sorted(osp.relpath(p, ROOT) for folder in ('', 'demo', 'ablations')
                 for p in glob.glob(osp.join(ROOT, 'configs', folder, '*.py')))


def test_index_lists_every_config_once():
    index = get_model_index()
    assert sorted(info.config for info in index.models.values()) == CONFIGS
    assert list_models() == [osp.splitext(osp.basename(c))[0] for c in
                             (info.config for info in index.models.values())]
    for name in list_models():
        assert osp.samefile(get_config_path(name), osp.join(ROOT, get_model(name).config))


def test_index_is_openmmlab_metafile_format():
    """model-index.yml imports the metafile; each model has the fields mim reads."""
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        assert yaml.safe_load(f) == {'Import': ['configs/metafile.yml']}
    with open(osp.join(ROOT, 'configs', 'metafile.yml')) as f:
        meta = yaml.safe_load(f)
    collections = {c['Name'] for c in meta['Collections']}
    for model in meta['Models']:
        assert {'Name', 'In Collection', 'Config', 'Metadata', 'Weights'} <= set(model)
        assert model['In Collection'] in collections
        for result in model.get('Results', []):
            assert {'Task', 'Dataset', 'Metrics'} <= set(result)
    # The package ships the same files (links in a checkout, copies once installed).
    assert osp.samefile(osp.join(MIM_DIR, 'model-index.yml'), osp.join(ROOT, 'model-index.yml'))


def test_variants_twins_and_release_names():
    variants = {v.name: v for v in list_variants()}
    assert len(variants) == 28  # Tables 1, 2 and 4 (22 ConvNets) and Table 11 (6 DeiTs)
    for variant in variants.values():
        twin = variant.baseline
        assert not twin.is_kw and twin.family == variant.family
        assert (variant.budget is None) == (not variant.is_kw)
    assert get_variant('kw1d4x_resnet18').budget == 0.25
    assert get_variant('kw1x_convnext_tiny').official is None
    # a released name finds its variant, also where kw_mm's name differs
    assert get_variant('kw1x_convnext_tiny_release').official == 'kw1x_convnext_tiny'
    assert get_model('mask-rcnn_kw-r50_1x_coco').backbone_variant == 'kw1x_resnet50'
    assert get_model('mask-rcnn_kw-r50_1x_coco').metric('box AP') == 41.8
    assert get_model('kw1x-resnet18_8xb32_in1k').metric('Top 1 Accuracy') == 73.67
    assert get_model('kw1x-resnet18_8xb32_in1k').paper_table == 'Table 1'
    with pytest.raises(KeyError, match="unknown variant 'kw1x_resnet34'"):
        get_variant('kw1x_resnet34')
    with pytest.raises(KeyError, match="unknown model 'resnet19'"):
        get_model('resnet19')


def test_recorded_flops_are_measured():
    """The index's Parameters and FLOPs are what the model-zoo code measures (two variants;
    every variant's Parameters are checked in test_paper_sizes)."""
    from kw_mm.analysis.model_zoo import zoo_row
    for name in ('kw1x_mobilenetv2_050', 'mobilenetv2_050'):
        variant = get_variant(name)
        row = zoo_row(variant)
        assert (row['params'], row['flops']) == (variant.params, variant.flops)


def test_build_model_from_a_name_a_config_and_a_dict():
    by_name = build_model('kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k')
    by_path = build_model(get_config_path('kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k'))
    by_dict = build_model(get_variant('kw1x_mobilenetv2_050').model_cfg())
    meta = build_model(get_variant('kw1x_mobilenetv2_050').model_cfg(), device='meta')
    counts = {sum(p.numel() for p in m.parameters()) for m in (by_name, by_path, by_dict, meta)}
    assert counts == {get_variant('kw1x_mobilenetv2_050').params}
    assert all(p.is_meta for p in meta.parameters())
    with pytest.raises(ValueError, match="device must be one of \\['cpu', 'meta'\\], got 'cuda'"):
        build_model('resnet18_8xb32_in1k', device='cuda')
    with pytest.raises(FileNotFoundError, match='missing.py'):
        build_model('missing.py')


def test_build_model_does_not_depend_on_the_default_scope():
    """A model dict of mmpretrain builds the same whatever default scope an earlier Runner or
    tool left behind (mmengine resolves unprefixed sub-module types in the default scope)."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')  # what a detection Runner leaves (conftest restores it)
    model = build_model(get_variant('mobilenetv2_050').model_cfg(), device='meta')
    assert type(model.data_preprocessor).__name__ == 'ClsDataPreprocessor'
    assert sum(p.numel() for p in model.parameters()) == get_variant('mobilenetv2_050').params


INSTALLED_CHECK = '''
import os, sys
import kw_mm
from kw_mm.apis import build_model, get_config_path, get_variant, list_models
assert kw_mm.__file__.startswith(sys.argv[1]), kw_mm.__file__
names = list_models()
for name in names:
    path = get_config_path(name)
    assert path.startswith(sys.argv[1]) and os.path.isfile(path) and not os.path.islink(path)
model = build_model('kw1x-mobilenet-v2-w0.5_8xb32-150e_in1k')
print(len(names), sum(p.numel() for p in model.parameters()))
'''


@pytest.mark.slow  # starts a subprocess
def test_installed_package_finds_its_index_and_configs(tmp_path):
    """``pip install .`` (not editable): from another directory, the index lists every config
    and a config named in it builds, without the source tree."""
    target = tmp_path / 'site'
    env = dict(os.environ, PIP_NO_INPUT='1')
    env.pop('PYTHONPATH', None)
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps',
                           '--no-build-isolation', '--target', str(target), ROOT],
                          capture_output=True, text=True, env=env, timeout=900,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, '-c', INSTALLED_CHECK, str(target)],
                          capture_output=True, text=True, cwd=str(elsewhere), timeout=600,
                          env=dict(env, PYTHONPATH=str(target)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, params = map(int, proc.stdout.split())
    assert count == len(CONFIGS)
    assert params == get_variant('kw1x_mobilenetv2_050').params
