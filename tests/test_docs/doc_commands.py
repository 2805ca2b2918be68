"""The fenced shell commands of README.md and docs/*.md, parsed into what they name.

A command names scripts (``python tools/train.py``, ``bash tools/dist_train.sh``), files of the
repository (``configs/...py``), ``make`` targets and flags (``--cfg-options``); the tests check
that each exists. A flag belongs to the tool the command runs: ``tools/dist_train.sh`` and
``tools/slurm_train.sh`` hand theirs to ``tools/train.py``, the ``*_test.sh`` ones to
``tools/test.py``.
"""
import glob
import os.path as osp
import re
import shlex
from dataclasses import dataclass, field
from typing import Iterator, List, Optional

from tests.helpers import REPO_ROOT as ROOT

#: The documents whose commands are checked.
DOCUMENTS = ['README.md'] + sorted(osp.relpath(p, ROOT)
                                   for p in glob.glob(osp.join(ROOT, 'docs', '*.md')))
SHELL_LANGUAGES = ('bash', 'shell', 'sh', 'console')
_FENCE = re.compile(r'^[ \t]*```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^[ \t]*```', re.M | re.S)
#: Paths of the repository a command may name (outputs such as work_dirs/ and data/ are not).
_REPO_PATH = re.compile(r'^(configs|tools|docs|tests|kw_mm)/[^$*{}]*$')
#: Launchers whose extra arguments go to a Python tool.
LAUNCHED = {'tools/dist_train.sh': 'tools/train.py', 'tools/slurm_train.sh': 'tools/train.py',
            'tools/dist_test.sh': 'tools/test.py', 'tools/slurm_test.sh': 'tools/test.py'}
_SEPARATORS = {'&&', '||', ';', '|', '&'}


@dataclass
class Command:
    """One shell command of a document."""

    document: str
    line: int
    text: str
    words: List[str]
    script: Optional[str] = None  # the script it runs (repo-relative), if any
    tool: Optional[str] = None  # the Python tool whose argparse takes its flags
    flags: List[str] = field(default_factory=list)
    paths: List[str] = field(default_factory=list)
    make_targets: List[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f'{self.document}:{self.line}: {self.text}'


def shell_blocks(document: str) -> Iterator[tuple]:
    """``(first line number, text)`` of every fenced shell block of ``document``."""
    with open(osp.join(ROOT, document)) as f:
        text = f.read()
    for match in _FENCE.finditer(text):
        if match['lang'] in SHELL_LANGUAGES:
            yield text.count('\n', 0, match.start('body')) + 1, match['body']


def _split(words: List[str]) -> Iterator[List[str]]:
    current: List[str] = []
    for word in words:
        if word in _SEPARATORS:
            if current:
                yield current
            current = []
        else:
            current.append(word)
    if current:
        yield current


def _parse(document: str, line: int, text: str, words: List[str]) -> Command:
    while words and re.match(r'^[A-Za-z_][A-Za-z0-9_]*=', words[0]):  # VAR=value prefixes
        words = words[1:]
    cmd = Command(document, line, text, words)
    if not words:
        return cmd
    head, rest = words[0], words[1:]
    if head == 'make':
        cmd.make_targets = [w for w in rest if not w.startswith('-') and '=' not in w]
    elif re.fullmatch(r'(\.venv/bin/)?python3?', head) and rest:
        if rest[0] not in ('-m', '-c'):
            cmd.script = cmd.tool = rest[0]
    elif head in ('bash', 'sh') and rest:
        cmd.script = rest[0]
        cmd.tool = LAUNCHED.get(rest[0])
    if cmd.tool is not None:
        cmd.flags = sorted({w.split('=', 1)[0] for w in words if w.startswith('--')})
    cmd.paths = [w for w in words if _REPO_PATH.match(w)]
    return cmd


def commands(documents: Optional[List[str]] = None) -> List[Command]:
    """Every command of the fenced shell blocks of ``documents`` (default: README and docs)."""
    found = []
    for document in documents or DOCUMENTS:
        for first, body in shell_blocks(document):
            joined = body.replace('\\\n', ' ')  # continuation lines (line numbers of the block)
            for offset, text in enumerate(joined.splitlines()):
                lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                lexer.commenters = '#'
                try:
                    words = list(lexer)
                except ValueError as err:
                    raise ValueError(f'{document}:{first + offset}: cannot parse {text!r}: '
                                     f'{err}') from None
                for part in _split(words):
                    found.append(_parse(document, first + offset, text.strip(), part))
    return [c for c in found if c.words]


def make_targets() -> List[str]:
    with open(osp.join(ROOT, 'Makefile')) as f:
        return re.findall(r'^([\w-]+):', f.read(), re.M)


def is_short(cmd: Command) -> bool:
    """Commands cheap enough to run in the tests: help texts and the docs' table check."""
    words = set(cmd.words)
    return cmd.script is not None and ('--help' in words or {'--markdown', '--check'} <= words)
