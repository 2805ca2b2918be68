"""Helpers shared by the tests: independent oracles, tiny Runner parts, subprocess runs.

They import nothing from the code they check where they act as oracles (see each module).
"""
import os.path as osp

#: The repository root (configs/, tools/, tests/data/ are found from here).
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: Test data: the reference release's layouts and state-dict keys.
DATA_DIR = osp.join(REPO_ROOT, 'tests', 'data')
