"""The ODConv release's checkpoints -> kw_mm: release-layout state dicts (key names and shapes of
docs/rivals.md: torchvision module paths, ODConv layer keys; key counts 346 / 928 / 926) are
detected, converted and loaded strictly; a checkpoint for the wrong config is refused naming
both sides and every difference."""
import re
import sys

import pytest
import torch

from kw_mm.apis import build_model, get_config_path
from kw_mm.converters.kw_release import OfficialCheckpointError
from kw_mm.converters.odconv_release import convert_odconv_state_dict, detect_odconv

from tests.helpers.tool_runs import check, run

MBV2_BLOCK_FEATURES = {}  # layer{l}.{b} -> features index, as torchvision numbers the blocks
_index = 1
for _layer, _blocks in enumerate((1, 2, 3, 4, 3, 3, 1), 1):
    for _b in range(_blocks):
        MBV2_BLOCK_FEATURES[f'layer{_layer}.{_b}'] = _index
        _index += 1


def release_key(key: str) -> str:
    """The release's name of a kw_mm key (written from the release's layout, docs/rivals.md)."""
    key = key.replace('head.fc.', 'fc.', 1) if key.startswith('head.') else key[len('backbone.'):]
    if key.startswith('fc.') and 'layer' not in key:
        return key
    if key.startswith(('conv1.conv.', 'conv1.bn.', 'conv2.conv.', 'conv2.bn.')):
        part, sub, rest = key.split('.', 2)
        return f"features.{0 if part == 'conv1' else 18}.{0 if sub == 'conv' else 1}.{rest}"
    match = re.match(r'(layer\d\.\d+)\.conv\.(\d)\.(conv|bn)\.(.*)$', key)
    if match is None:
        return key  # ResNet: torchvision's names
    block, unit, sub, rest = match.groups()
    index, unit = MBV2_BLOCK_FEATURES[block], int(unit)
    last = 1 if index == 1 else 2  # the projection unit: an ODConv directly, then its BN
    if unit == last:
        return f'features.{index}.conv.{unit + (sub == "bn")}.{rest}'
    return f"features.{index}.conv.{unit}.{0 if sub == 'conv' else 1}.{rest}"


def release_state(model_name: str, mobilenet: bool):
    torch.manual_seed(0)
    model = build_model(get_config_path(model_name))
    state = {release_key(k): v for k, v in model.state_dict().items()}
    if mobilenet:
        state = {('classifier.1.' + k[3:] if k.startswith('fc.') else k): v
                 for k, v in state.items()}
    return model, state


@pytest.mark.parametrize('model_name, arch, mobilenet, num_keys', [
    ('odconv4x-resnet18_8xb32_in1k', 'resnet18', False, 346),
    ('odconv4x-mobilenet-v2-w0.5_8xb32-150e_in1k', 'mobilenet-v2-w0.5', True, 926),
])
def test_release_checkpoint_converts_and_loads_strictly(model_name, arch, mobilenet, num_keys):
    model, state = release_state(model_name, mobilenet)
    assert len(state) == num_keys
    if mobilenet:
        assert 'features.2.conv.2.weight' in state and 'features.2.conv.3.running_var' in state
        assert 'features.1.conv.1.weight' in state and 'classifier.1.bias' in state
    assert detect_odconv(state) == (arch, 4)
    result = convert_odconv_state_dict(state)
    assert result.config == get_config_path(model_name)
    fresh = build_model(result.config)
    fresh.load_state_dict(result.state_dict, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_wrong_config_is_refused_naming_both():
    _, state = release_state('odconv4x-resnet18_8xb32_in1k', False)
    with pytest.raises(OfficialCheckpointError,
                       match=r'checkpoint is ODConv 4x resnet18 .* but '
                             r'dyconv4x-resnet18_8xb32_in1k.py expects'):
        convert_odconv_state_dict(state, get_config_path('dyconv4x-resnet18_8xb32_in1k'))


def test_not_an_odconv_checkpoint():
    with pytest.raises(OfficialCheckpointError, match='not an ODConv release checkpoint'):
        detect_odconv({'conv1.weight': torch.zeros(64, 3, 7, 7)})


@pytest.mark.slow
def test_command_line(tmp_path):
    _, state = release_state('odconv4x-resnet18_8xb32_in1k', False)
    src, dst = tmp_path / 'od_resnet18_4x.pth', tmp_path / 'out.pth'
    torch.save(state, src)
    proc = check(run([sys.executable, 'tools/model_converters/odconv_to_mmpretrain.py', str(src),
                      str(dst)]))
    assert 'ODConv 4x resnet18 (346 tensors)' in proc.stdout
    assert set(torch.load(dst, weights_only=True)) == {'state_dict', 'meta'}
