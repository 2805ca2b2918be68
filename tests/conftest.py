"""Test isolation: every test starts from the same process-wide state, whatever ran before.

- mmengine keeps the default registry scope (`DefaultScope`) as process-wide state; a Runner or
  `init_default_scope('mmdet')` in one test would otherwise make the next test resolve bare type
  names such as ``'ImageClassifier'`` in mmdet's registry.
- Random numbers: every test starts with Python, NumPy and torch seeded from its own node id, so
  a test draws the same numbers alone, in the full suite and in any order (a test that needs
  other numbers seeds them itself).
- A Runner with ``randomness.deterministic=True`` switches torch to deterministic algorithms for
  the whole process; the switch is turned off again after each test.

Disk: the tool tests write checkpoints (about 1.8 GB at the peak of a full run; pytest.ini
deletes a passing test's directory when it ends); the session refuses to
start with less than :data:`MIN_FREE_DISK_GB` free in the temporary directory instead of failing
late with ``No space left on device``.

``pytest --reverse-order`` runs the collected tests in reverse order, to show that no test
depends on another having run first.
"""
import os
import random
import shutil
import tempfile
import zlib

import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope


#: Free space the suite needs where pytest writes its temporary directories (GB).
MIN_FREE_DISK_GB = 2.5


def pytest_sessionstart(session):
    tmp = os.path.abspath(session.config.option.basetemp or tempfile.gettempdir())
    while not os.path.isdir(tmp):  # --basetemp is created later: measure where it will be
        tmp = os.path.dirname(tmp)
    free_gb = shutil.disk_usage(tmp).free / 2**30
    if free_gb < MIN_FREE_DISK_GB:
        raise pytest.UsageError(
            f'{free_gb:.1f} GB free in {tmp}; the test suite needs at least {MIN_FREE_DISK_GB} GB '
            f'there (its tool tests write checkpoints): free some space or point --basetemp '
            f'elsewhere')


def pytest_addoption(parser):
    parser.addoption('--reverse-order', action='store_true', default=False,
                     help='run the collected tests in reverse order (order-independence check)')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--reverse-order'):
        items.reverse()


@pytest.fixture(autouse=True)
def _restore_default_scope():
    # Back to *no* default scope after every test, not to what the test found: a module-scoped
    # fixture (a Runner, ``init_model`` of an mmdet config) sets the scope before the first
    # test of its module starts, and a per-test snapshot would carry that scope on to every
    # later module (seen with ``--reverse-order``: mmpretrain models resolved in mmdet's scope).
    yield
    DefaultScope._instance_dict.clear()


@pytest.fixture(autouse=True)
def _seed_every_test(request):
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    yield
    torch.use_deterministic_algorithms(False)  # the process default, whatever a fixture set
