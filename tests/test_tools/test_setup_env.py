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


# ---------------------------------------------------------------------- the console output
FAKE_PYTHON = r"""#!/usr/bin/env bash
# A stand-in interpreter for the install's output logic: it records its calls, makes venvs of
# itself, and prints as much noise as pip and a compiler do. Imports of torch and mmcv "fail"
# (so those steps run); everything else succeeds.
echo "$*" >> "${FAKE_CALLS}"
if [[ "$1 $2" == "-m venv" ]]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
if [[ "$1 $2" == "-m pip" ]]; then
  if [[ -n "${FAKE_SLOW_TORCH:-}" && "$*" == *torch==* ]]; then sleep 5; fi
  for i in $(seq 1 300); do echo "Collecting noise-$i"; echo "WARNING: compiler noise $i" >&2; done
  exit 0
fi
if [[ "$1" == "-c" ]]; then
  case "$2" in
    *"import torch, torchvision; assert"*|*"import mmcv, mmcv.ops; assert"*) exit 1;;
    *"print('torch'"*) echo "torch 2.14.1 mmcv 2.1.0 mmdet 3.3.0 mmpretrain 1.2.0";
                       echo "UserWarning: pkg_resources is deprecated" >&2; exit 0;;
  esac
fi
exit 0
"""


def run_fake_install(tree, fail_pip=False, **extra_env):
    fake = tree / 'fake_python'
    script = FAKE_PYTHON.replace('exit 0\nfi\nif [[ "$1" == "-c" ]]',
                                 'exit 3\nfi\nif [[ "$1" == "-c" ]]') if fail_pip else FAKE_PYTHON
    fake.write_text(script)
    fake.chmod(0o755)
    cache = tree / 'wheels' / 'torch-2.14.1-py311'
    cache.mkdir(parents=True)
    (cache / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl').write_text('')  # a cached build
    os.remove(tree / STAMP)
    env = dict(os.environ, PYTHON=str(fake), HOME=str(tree), KW_MM_WHEEL_CACHE=str(tree / 'wheels'),
               FAKE_CALLS=str(tree / 'calls.txt'), **extra_env)
    return subprocess.run(['bash', str(tree / SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=120)


def test_install_prints_steps_and_keeps_the_noise_in_the_log(tree):
    proc = run_fake_install(tree)
    assert proc.returncode == 0, proc.stderr
    log = tree / '.venv' / 'setup.log'
    lines = proc.stdout.splitlines()
    # One line per step, each with the elapsed time; nothing of pip's or the compiler's output.
    assert proc.stderr == '' and len(lines) < 12, proc.stdout
    assert lines[0] == f'[setup_env] setting up {tree / ".venv"} (full log: {log})'
    assert all(re.fullmatch(r'\[setup_env\] .+ \[\d+:\d\d\]', line) for line in lines[1:]), lines
    for step in ('creating', 'installing torch 2.14.1', 'reusing the cached mmcv wheel',
                 'installing the OpenMMLab toolboxes', 'installing openmim 0.3.9',
                 'stack ok: torch 2.14.1 mmcv 2.1.0'):
        assert any(step in line for line in lines), (step, lines)
    text = log.read_text()
    assert text.count('Collecting noise-') == 6 * 300 and 'compiler noise 300' in text
    assert 'pkg_resources is deprecated' in text
    calls = (tree / 'calls.txt').read_text()
    assert '-m pip install --no-deps openmim==0.3.9' in calls
    assert (tree / STAMP).is_file()


def test_failed_step_shows_the_end_of_the_log(tree):
    proc = run_fake_install(tree, fail_pip=True)
    assert proc.returncode == 1 and not (tree / STAMP).exists()
    assert 'FAILED while updating pip' in proc.stderr
    assert 'compiler noise 300' in proc.stderr and 'compiler noise 200' not in proc.stderr


def test_long_step_prints_a_heartbeat(tree):
    """A step that outlasts KW_MM_SETUP_HEARTBEAT seconds says it is still running (the mmcv
    build: a line every 2 minutes by default, about a dozen lines for the whole build)."""
    proc = run_fake_install(tree, KW_MM_SETUP_HEARTBEAT='2', FAKE_SLOW_TORCH='1')
    assert proc.returncode == 0, proc.stderr
    beats = [line for line in proc.stdout.splitlines() if '... still' in line]
    assert 1 <= len(beats) <= 3 and all('still installing torch' in b for b in beats), beats
    assert all(f"(log: {tree / '.venv' / 'setup.log'})" in line for line in beats)
