"""Every command of README.md and docs/*.md exists: its scripts, files, make targets and flags.

The flags of a tool are read from its ``--help`` (one process reads all the tools' help texts);
the short commands (``--help`` forms, the model-zoo check) run.
"""
import json
import os.path as osp
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT as ROOT
from tests.test_docs.doc_commands import commands, is_short, make_targets

#: Reads ``--help`` of every tool given on the command line in one process; prints JSON.
HELP_READER = r'''
import contextlib, io, json, runpy, sys
texts = {}
for path in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [path, '--help']
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name='__main__')
        except SystemExit:
            pass
    texts[path] = out.getvalue()
sys.__stdout__.write(json.dumps(texts))
'''

COMMANDS = commands()


def exists(path: str) -> bool:
    return osp.exists(osp.join(ROOT, path))


def test_the_docs_have_commands():
    """The parser finds the commands users are told to run (a parser that finds none would
    check nothing)."""
    scripts = {c.script for c in COMMANDS}
    assert {'tools/train.py', 'tools/dist_train.sh', 'tools/analysis/model_zoo.py',
            'tools/deployment/export_onnx.py'} <= scripts
    assert any(c.make_targets == ['demo'] for c in COMMANDS)


def test_scripts_and_files_exist():
    missing = []
    for cmd in COMMANDS:
        for path in filter(None, [cmd.script] + cmd.paths):
            if not exists(path):
                missing.append(f'{cmd.where}\n    names {path}, which does not exist')
    assert not missing, '\n'.join(missing)


def test_make_targets_exist():
    targets = set(make_targets())
    missing = [f'{cmd.where}\n    make target {t!r} is not in the Makefile' for cmd in COMMANDS
               for t in cmd.make_targets if t not in targets]
    assert not missing, '\n'.join(missing)


@pytest.fixture(scope='module')
def help_texts():
    """``--help`` of every Python tool the docs run (and of those with pending flags)."""
    tools = sorted({c.tool for c in COMMANDS if c.tool and c.tool.endswith('.py')})
    proc = subprocess.run([sys.executable, '-c', HELP_READER] + tools, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts = json.loads(proc.stdout)
    empty = [tool for tool, text in texts.items() if '--help' not in text]
    assert not empty, f'no argparse help from {empty}'
    return texts


@pytest.mark.slow  # one subprocess reads every tool's --help
def test_flags_exist(help_texts):
    unknown = []
    for cmd in COMMANDS:
        if cmd.tool not in help_texts:
            continue
        for flag in cmd.flags:
            if flag not in help_texts[cmd.tool].replace(',', ' ').split():
                unknown.append(f'{cmd.where}\n    {cmd.tool} has no flag {flag}')
    assert not unknown, '\n'.join(unknown)


@pytest.mark.slow  # runs the short commands of the docs
@pytest.mark.parametrize('cmd', [c for c in COMMANDS if is_short(c)], ids=lambda c: c.text)
def test_short_commands_run(cmd, help_texts):
    if cmd.words[2:] == ['--help']:  # ran by the help_texts fixture, in one process
        assert 'usage:' in help_texts[cmd.script], cmd.where
        return
    argv = [sys.executable if w in ('python', 'python3') else w for w in cmd.words]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f'{cmd.where}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}'
