"""The converter of reference checkpoints (tools/model_converters/kw_official_to_mmpretrain.py).

The converted models are checked against ``reference_kw``, a plain functional forward of the
reference models written from the method and the release's layouts (it imports nothing from
kw_mm), on synthetic checkpoints with the released keys and shapes.
"""
import argparse
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from kw_mm import set_temperature
from kw_mm.apis import build_model, list_variants
from kw_mm.utils.checkpoint import load_state_dict_strict
from kw_mm.converters.kw_release import (OfficialCheckpointError, convert_checkpoint,
                                         convert_state_dict, detect_variant, unwrap_official)
from tests.helpers.reference_kw import (calibrate, kw_layers, random_state_dict, reference_logits,
                          released_names, statedict_shapes)

from tests.helpers import REPO_ROOT as ROOT
TOOL = os.path.join(ROOT, 'tools', 'model_converters', 'kw_official_to_mmpretrain.py')
RELEASED = released_names()
#: Full-logit comparisons: every ResNet18 budget, every ResNet50 budget (1/2x with the non-local
#: basis, 1x, 4x), MobileNetV2 1.0 at 1/2x (KW classifier) and 1x, MobileNetV2 0.5 at 4x, the
#: ConvNeXt release, and three plain baselines.
LOGIT_CASES = [
    'kw1d4x_resnet18', 'kw1d2x_resnet18', 'kw1x_resnet18', 'kw2x_resnet18', 'kw4x_resnet18',
    'kw1d2x_resnet50', 'kw1x_resnet50', 'kw4x_resnet50', 'kw1d2x_mobilenetv2_100',
    'kw1x_mobilenetv2_100', 'kw4x_mobilenetv2_050', 'kw1x_convnext_tiny', 'resnet18',
    'mobilenetv2_050', 'convnext_tiny'
]
TEMPERATURES = (0.0, 0.5, 1.0)
#: KW 4x ResNet50 has 102M parameters, 100M of them cells (0.8 GB in float64): each layer's
#: kernel assembly reads its whole warehouse, so one forward takes about 3 s on one core
#: whatever the input size or batch, and the reference side costs as much again. Three
#: temperatures took 22-25 s; t = 0 (the attention alone) and t = 1 (its b = 4 one-to-one
#: assignment alone) keep it at about 16 s. t = 0.5 adds only the linear mix of the two, which every
#: other KW case checks with the same code.
CASE_TEMPERATURES = {'kw4x_resnet50': (0.0, 1.0)}
MAX_REL_ERROR = 1e-4


@pytest.fixture(autouse=True)
def one_thread():
    """Small float64 convolutions: one thread is faster than two fighting over shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def meta_state_dict(name: str) -> dict:
    """The released keys and shapes of ``name``, without data."""
    return {k: torch.empty(s, device='meta') for k, s in statedict_shapes(name)}


def to_double(state_dict: dict) -> dict:
    return {k: v.double() if v.is_floating_point() else v for k, v in state_dict.items()}


def rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


# --------------------------------------------------------------------------- the oracle itself
def test_reference_oracle_kw1x_at_t1_is_the_plain_network_of_assigned_cells():
    """KW 1x at t = 1 is ResNet18 whose kernels are the one-hot assigned cells (paper Sec. 3).

    The plain kernels are cut here with one tensor permute (the release's own formulation), not
    with the oracle's cell-by-cell loop, so both readings of the cell order must agree.
    """
    torch.manual_seed(0)
    kw_name, plain_name = 'kw1x_resnet18', 'resnet18'
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    kw_sd = calibrate(kw_name, to_double(random_state_dict(kw_name, seed=5)), x, temperature=1.0)
    plain_sd = {k: v for k, v in kw_sd.items()
                if not k.startswith('warehouse_manager') and '.attention.' not in k}
    for name, info in kw_layers(kw_name).items():
        cells = kw_sd[f'warehouse_manager.weights.{info.warehouse_index}']
        cout, cin, kh, kw = info.weight_shape
        go, gi = cout // info.cell_out, cin // info.cell_in
        taken = cells[info.start:info.start + info.num_mixtures].reshape(
            kh * kw, go, gi, info.cell_out, info.cell_in)
        plain_sd[f'{name}.weight'] = taken.permute(1, 3, 2, 4, 0).reshape(cout, cin, kh, kw)
    assert sorted(plain_sd) == sorted(k for k, _ in statedict_shapes(plain_name))
    kw_out = reference_logits(kw_name, kw_sd, x, temperature=1.0)
    plain_out = reference_logits(plain_name, plain_sd, x)
    assert rel_error(kw_out, plain_out) < 1e-10
    assert rel_error(reference_logits(kw_name, kw_sd, x, temperature=0.0), plain_out) > 1e-2


# --------------------------------------------------------------------------- detection
@pytest.mark.parametrize('name', RELEASED)
def test_detects_every_released_variant(name):
    detection = detect_variant(meta_state_dict(name))
    assert [v.label for v in detection.fits] == [name]
    result = convert_state_dict(meta_state_dict(name))
    assert result.variant.official == name
    # Every source key is consumed and every model key filled.
    assert len(result.state_dict) == len(statedict_shapes(name))


def test_every_released_variant_has_a_config_it_fits():
    """What docs/conversion.md tells users: the converted checkpoint loads into configs/<variant>_*."""
    released = [v for v in list_variants() if v.official]
    assert sorted(v.official for v in released) == RELEASED
    for variant in released:
        configs = [model.config_path for model in variant.models]
        assert configs, f'no config for {variant.name}'
        result = convert_state_dict(meta_state_dict(variant.official), config=configs[-1])
        assert result.variant is variant
        assert result.target.label == f'config {os.path.basename(configs[-1])[:-3]}'


# --------------------------------------------------------------------------- logits
@pytest.mark.parametrize('name', LOGIT_CASES)
def test_converted_checkpoint_gives_the_reference_logits(name):
    """Same logits as the reference for every temperature (relative error < 1e-4).

    In float64: random networks on random images are ill-conditioned (deep features of all
    inputs are nearly alike, and the BatchNorms that separate them amplify rounding by orders
    of magnitude), so float32 rounding alone would differ by more than the tolerance, while the
    math of both sides is the same. The check is on the converted weights and the math.
    """
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 3, 32, 32, generator=gen, dtype=torch.float64)
    base = to_double(random_state_dict(name, seed=11))
    model = None
    temperatures = TEMPERATURES if any(k.startswith('warehouse') for k in base) else (0.0, )
    temperatures = CASE_TEMPERATURES.get(name, temperatures)
    outputs = []
    for t in temperatures:
        # BatchNorm statistics fitted at this temperature (on x itself), and the logits.
        ref_sd, expected = calibrate(name, base, x, temperature=t, return_logits=True)
        result = convert_state_dict(ref_sd)
        assert result.variant.label == name
        if model is None:
            model = build_model(result.target.model_cfg).double().eval()
        load_state_dict_strict(model, result.state_dict, f'converted {name}', 'model')
        if temperatures != (0.0, ):
            assert set_temperature(model, t) > 0
        with torch.no_grad():
            ours = model(x, mode='tensor')
        assert ours.shape == expected.shape == (3, 1000)
        # The comparison sees the whole network: different inputs give clearly different logits.
        assert (expected[0] - expected[1]).abs().max() > 0.1 * expected.abs().max()
        assert rel_error(ours, expected) < MAX_REL_ERROR, (name, t)
        outputs.append(expected)
    if len(outputs) > 1:  # the temperature changes the reference's output, so t was applied
        assert rel_error(outputs[0], outputs[-1]) > 1e-2


# --------------------------------------------------------------------------- refusals
def test_wrong_variant_is_refused_naming_both_sides():
    with pytest.raises(OfficialCheckpointError) as err:
        convert_state_dict(meta_state_dict('kw4x_resnet50'), variant='kw1x_resnet50')
    assert str(err.value).startswith('checkpoint is kw4x_resnet50 (warehouse 0: 348 cells) but '
                                     'variant kw1x_resnet50 expects 87')


def test_wrong_config_is_refused_naming_both_sides():
    config = os.path.join(ROOT, 'configs', 'kw1x-resnet50_8xb512-300e_in1k.py')
    with pytest.raises(OfficialCheckpointError) as err:
        convert_state_dict(meta_state_dict('kw4x_resnet50'), config=config)
    assert str(err.value).startswith('checkpoint is kw4x_resnet50 (warehouse 0: 348 cells) but '
                                     'config kw1x-resnet50_8xb512-300e_in1k expects 87')


def test_other_family_and_cell_shape_are_refused():
    with pytest.raises(OfficialCheckpointError,
                       match=r'^checkpoint is kw1x_resnet18 \(a resnet18\) but variant '
                       r'kw1x_mobilenetv2_100 is a mobilenet-v2'):
        convert_state_dict(meta_state_dict('kw1x_resnet18'), variant='kw1x_mobilenetv2_100')
    # Same cell count (56), other cell shape: 1/4x cells are 32x32, 1x cells 64x64.
    with pytest.raises(OfficialCheckpointError) as err:
        convert_state_dict(meta_state_dict('kw1d4x_resnet18'), variant='kw1x_resnet18')
    assert 'checkpoint is kw1d4x_resnet18 (warehouse 0: 56 cells of [32, 32, 1, 1]) but variant ' \
        'kw1x_resnet18 expects 56 cells of [64, 64, 1, 1]' in str(err.value)
    with pytest.raises(OfficialCheckpointError, match='unknown variant'):
        convert_state_dict(meta_state_dict('kw1x_resnet18'), variant='kw1x_resnet34')


def test_truncated_state_dict_is_refused():
    sd = meta_state_dict('kw1x_resnet18')
    del sd['layer1.0.conv1.attention.fc2.bias']
    with pytest.raises(OfficialCheckpointError) as err:
        convert_state_dict(sd)
    msg = str(err.value)
    assert 'fits no released variant' in msg and 'closest is kw1x_resnet18' in msg
    assert 'missing in checkpoint: backbone.layer1.0.conv1.attention.fc2.bias' in msg
    # An explicit variant is refused the same way.
    with pytest.raises(OfficialCheckpointError, match='layer1.0.conv1.attention.fc2.bias'):
        convert_state_dict(sd, variant='kw1x_resnet18')


def test_altered_state_dict_is_refused():
    sd = meta_state_dict('kw1x_resnet18')
    sd['warehouse_manager.weights.1'] = torch.empty(46, 128, 128, 1, 1, device='meta')
    with pytest.raises(OfficialCheckpointError) as err:
        convert_state_dict(sd)
    assert 'the checkpoint has (warehouse 1: 46 cells) but kw1x_resnet18 expects 47' in \
        str(err.value)

    sd = meta_state_dict('kw1x_mobilenetv2_100')
    sd['features.3.conv.1.1.weight'] = torch.empty(145, device='meta')
    with pytest.raises(OfficialCheckpointError, match=r'backbone.layer2.1.conv.1.bn.weight: '
                       r'checkpoint \[145\] vs model \[144\]'):
        convert_state_dict(sd)


def test_unknown_keys_are_refused_not_dropped():
    sd = meta_state_dict('kw1x_convnext_tiny')
    sd['stages.0.0.extra_scale'] = torch.empty(96, device='meta')
    with pytest.raises(OfficialCheckpointError, match=r"1 keys are not keys of a reference "
                       r"convnext-tiny: stages.0.0.extra_scale"):
        convert_state_dict(sd)
    sd = meta_state_dict('kw1x_resnet18')
    sd['layer1.0.se.fc.weight'] = torch.empty(4, 64, device='meta')  # maps, but fits nothing
    with pytest.raises(OfficialCheckpointError,
                       match='not in model: backbone.layer1.0.se.fc.weight'):
        convert_state_dict(sd)
    with pytest.raises(OfficialCheckpointError, match='match no model of the reference release'):
        convert_state_dict({'encoder.weight': torch.empty(3, 3, device='meta')})
    sd = meta_state_dict('resnet50')
    sd = {k: v for k, v in sd.items() if not k.startswith('layer3.5.')}
    with pytest.raises(OfficialCheckpointError, match=r'blocks per stage \[3, 4, 5, 3\]'):
        convert_state_dict(sd)


# --------------------------------------------------------------------------- files and wrappers
def _small_checkpoint() -> dict:
    return random_state_dict('kw1x_mobilenetv2_050', seed=2)


@pytest.mark.parametrize('wrapper', [None, 'model', 'model_ema', 'state_dict'])
def test_wrappers_and_saved_file(tmp_path, wrapper):
    sd = _small_checkpoint()
    obj = sd if wrapper is None else {wrapper: sd, 'epoch': 3,
                                      'args': argparse.Namespace(model='kw_mobilenetv2_050')}
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save(obj, src)
    result = convert_checkpoint(str(src), str(dst))
    assert result.variant.official == 'kw1x_mobilenetv2_050'
    saved = torch.load(dst, weights_only=True)
    assert set(saved) == {'state_dict', 'meta'}
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in saved['meta'].items())
    assert saved['meta']['official_model'] == 'kw1x_mobilenetv2_050'
    assert saved['meta']['source_state_dict'] == ('state dict' if wrapper is None else
                                                  f'[{wrapper!r}]')
    expected = convert_state_dict(sd).state_dict
    assert list(saved['state_dict']) == list(expected)
    for key, tensor in expected.items():
        assert torch.equal(saved['state_dict'][key], tensor), key


def test_choosing_the_ema_weights(tmp_path):
    sd, ema = _small_checkpoint(), random_state_dict('kw1x_mobilenetv2_050', seed=3)
    src = tmp_path / 'official.pth'
    torch.save({'model': sd, 'model_ema': ema}, src)
    for key, source in (('auto', sd), ('model', sd), ('model_ema', ema)):
        dst = tmp_path / f'{key}.pth'
        convert_checkpoint(str(src), str(dst), key=key)
        weights = torch.load(dst, weights_only=True)['state_dict']
        assert torch.equal(weights['backbone.warehouse_manager.weights.0'],
                           source['warehouse_manager.weights.0'])
    with pytest.raises(OfficialCheckpointError, match=r"no state dict under 'state_dict'; state "
                       r"dicts found under: \['model', 'model_ema'\]"):
        unwrap_official({'model': sd, 'model_ema': ema}, key='state_dict')
    with pytest.raises(OfficialCheckpointError, match='neither a state dict nor a dict holding'):
        unwrap_official({'epoch': 3})


@pytest.mark.slow  # starts a subprocess
def test_command_line_end_to_end(tmp_path):
    from mmengine.runner import load_checkpoint
    name = 'kw4x_mobilenetv2_050'
    sd = random_state_dict(name, seed=4)
    src, dst = tmp_path / f'{name}.pth', tmp_path / 'out' / 'converted.pth'
    torch.save({'model': sd, 'epoch': 299}, src)
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, TOOL, str(src), str(dst)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f'{name} ({len(sd)} tensors)' in done.stdout
    assert 'evaluate with: python tools/test.py configs/kw4x-mobilenet-v2-w0.5_8xb32-150e_in1k.py' \
        in done.stdout
    # The result loads strictly with mmengine into the model of the config the tool named.
    from mmengine.config import Config
    config = os.path.join(ROOT, 'configs', 'kw4x-mobilenet-v2-w0.5_8xb32-150e_in1k.py')
    cfg = Config.fromfile(config)
    model = build_model(cfg.model.to_dict())
    load_checkpoint(model, str(dst), strict=True)
    assert torch.equal(model.backbone.warehouse_manager.weights[3],
                       sd['warehouse_manager.weights.3'])


def test_command_line_refusal(tmp_path, monkeypatch, capsys):
    """The tool's exit status and message for a checkpoint that is not the requested variant
    (in-process: the end-to-end run above already covers the script as a subprocess)."""
    spec = importlib.util.spec_from_file_location('kw_official_to_mmpretrain', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = tmp_path / 'kw4x.pth'
    torch.save({k: torch.zeros(s) for k, s in statedict_shapes('kw4x_mobilenetv2_050')}, src)
    monkeypatch.setattr(sys, 'argv', [TOOL, str(src), str(tmp_path / 'x.pth'), '--variant',
                                      'kw1x_mobilenetv2_050'])
    assert tool.main() == 1
    assert 'error: checkpoint is kw4x_mobilenetv2_050 (warehouse 0: 36 cells) but variant ' \
        'kw1x_mobilenetv2_050 expects 9' in capsys.readouterr().err
    assert not (tmp_path / 'x.pth').exists()
