"""kw_mm's filters of the toolboxes' repeated messages (kw_mm/_warnings.py)."""
import os
import os.path as osp
import subprocess
import sys
import warnings

import pytest

import kw_mm  # noqa: F401 (installs the filters)
from kw_mm._warnings import QUIET

from tests.helpers import REPO_ROOT as ROOT

#: Builds two configs with mmpretrain:: bases (each resolves packages through mmengine's
#: is_installed) and runs the profiler twice, as the model-zoo and memory tools do.
REPEATING = '''
import kw_mm
import torch
from torch.profiler import ProfilerActivity, profile
from kw_mm.apis import build_model
for name in ('resnet18_8xb32_in1k', 'mobilenet-v2-w0.5_8xb32-150e_in1k'):
    build_model(name, device='meta')
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True):
        torch.ones(4) + 1
print('built')
'''


def test_filters_are_installed():
    for message, category in QUIET:
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn(f'{message} as an API', category)
        assert caught == []  # catch_warnings(record) keeps the installed filters
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        warnings.warn('pkg_resources is deprecated as an API', UserWarning)
    assert len(caught) == 1  # a user's own filter still wins


@pytest.mark.slow  # a subprocess: the messages go to its stderr
def test_tools_print_no_repeated_toolbox_messages():
    env = {k: v for k, v in os.environ.items() if k != 'KINETO_LOG_LEVEL'}
    env['PYTHONPATH'] = ROOT
    proc = subprocess.run([sys.executable, '-c', REPEATING], cwd=osp.join(ROOT, 'tests'),
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == 'built'
    assert 'pkg_resources' not in proc.stderr
    assert 'profiler_start' not in proc.stderr and 'USDT' not in proc.stderr, proc.stderr
