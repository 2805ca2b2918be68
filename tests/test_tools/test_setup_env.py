"""tools/setup_env.sh: when it reuses .venv and when it re-runs the install.

The script runs from a copy of the repository's install inputs in a temporary folder, with
``PYTHON=false``: an up-to-date stamp makes it exit 0 before anything else, and an out-of-date
one makes it start the install, which stops at once at creating the venv (``false -m venv``).
Nothing is installed and the real ``.venv`` and wheel cache are never touched.
"""
import os
import re
import shutil
import subprocess

import pytest

from tests.helpers.tool_runs import ROOT

SCRIPT = os.path.join('tools', 'setup_env.sh')
STAMP = os.path.join('.venv', '.kw_mm_installed')


def makefile_stamp_inputs() -> list:
    """The prerequisites of the Makefile's ``$(STAMP)`` rule (what ``make`` re-runs it for)."""
    text = open(os.path.join(ROOT, 'Makefile')).read()
    match = re.search(r'^\$\(STAMP\):(.*)$', text, flags=re.MULTILINE)
    assert match, 'no $(STAMP) rule in the Makefile'
    return match.group(1).split()


@pytest.fixture
def tree(tmp_path):
    """A copy of the install inputs and a stamp, all with explicit, distinct times."""
    for rel in makefile_stamp_inputs():
        os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), tmp_path / rel)
        os.utime(tmp_path / rel, (1_000_000, 1_000_000))
    os.makedirs(tmp_path / '.venv')
    (tmp_path / STAMP).write_text('')
    os.utime(tmp_path / STAMP, (2_000_000, 2_000_000))  # newer than every input
    return tmp_path


def run_setup(tree) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON='false', HOME=str(tree),
               KW_MM_WHEEL_CACHE=str(tree / 'wheels'))
    return subprocess.run(['bash', str(tree / SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=60)


def test_makefile_lists_every_install_input():
    assert sorted(makefile_stamp_inputs()) == sorted([
        'requirements/runtime.txt', 'requirements/tests.txt', 'setup.py', SCRIPT])


@pytest.mark.slow  # starts a subprocess
def test_current_stamp_reuses_the_venv(tree):
    proc = run_setup(tree)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, '', '')


@pytest.mark.slow  # starts a subprocess
@pytest.mark.parametrize('changed', makefile_stamp_inputs())
def test_any_newer_input_reruns_the_install(tree, changed):
    os.utime(tree / changed, (3_000_000, 3_000_000))
    proc = run_setup(tree)
    # It went past the stamp check: the install started and stopped at the fake interpreter.
    assert proc.returncode != 0
    assert f'[setup_env] creating {tree / ".venv"}' in proc.stdout


@pytest.mark.slow  # starts a subprocess
def test_missing_stamp_reruns_the_install(tree):
    os.remove(tree / STAMP)
    proc = run_setup(tree)
    assert proc.returncode != 0 and '[setup_env] creating' in proc.stdout
