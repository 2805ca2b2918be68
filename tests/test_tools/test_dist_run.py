"""tools/dist_run.sh picks its interpreter: $PYTHON, else an activated virtualenv's python, else
the repo's .venv, else python (a copy of the script beside a stand-in .venv interpreter)."""
import os
import shutil
import subprocess

import pytest

from tests.helpers.tool_runs import ROOT

ECHO = '#!/usr/bin/env bash\necho "{name} $*"\n'


@pytest.fixture
def tree(tmp_path):
    (tmp_path / 'tools').mkdir()
    for script in ('dist_run.sh', 'select_python.sh'):
        shutil.copy2(os.path.join(ROOT, 'tools', script), tmp_path / 'tools')
    for name, path in (('venv', tmp_path / '.venv' / 'bin' / 'python'),
                       ('chosen', tmp_path / 'chosen'), ('path', tmp_path / 'bin' / 'python')):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ECHO.format(name=name))
        path.chmod(0o755)
    return tmp_path


def interpreter(tree, **env) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'VIRTUAL_ENV')}
    base['PATH'] = f"{tree / 'bin'}:{base['PATH']}"
    proc = subprocess.run(['bash', str(tree / 'tools' / 'dist_run.sh'), 'train.py', '1', 'c.py'],
                          env=dict(base, **env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert '-m torch.distributed.run' in proc.stdout
    return proc.stdout.split()[0]


def test_repo_venv_when_nothing_is_chosen(tree):
    assert interpreter(tree) == 'venv'


def test_python_variable_wins(tree):
    assert interpreter(tree, PYTHON=str(tree / 'chosen')) == 'chosen'


def test_activated_virtualenv_wins(tree):
    assert interpreter(tree, VIRTUAL_ENV='/some/env') == 'path'


def test_plain_python_without_repo_venv(tree):
    shutil.rmtree(tree / '.venv')
    assert interpreter(tree) == 'path'
