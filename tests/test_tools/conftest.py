"""Fixtures of the tool tests."""
import pytest

from tests.helpers.tool_runs import tiny_cls


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """Two demo classes (4 train / 6 val images each) and a config training KW ResNet18 on them
    (one set per test module)."""
    return tiny_cls(tmp_path_factory.mktemp('tiny'))
