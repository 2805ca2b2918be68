"""Test isolation: every test starts with the mmengine default scope it found.

mmengine keeps the default registry scope (`DefaultScope`) as process-wide state; a Runner or
`init_default_scope('mmdet')` in one test would otherwise make the next test resolve bare type
names such as ``'ImageClassifier'`` in mmdet's registry.
"""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def _restore_default_scope():
    before = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(before)
