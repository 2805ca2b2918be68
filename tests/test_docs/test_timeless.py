"""README, docs and the package's comments say what is true now, in words that stay true.

No dates, times of day or words of a working session ("this session", "earlier today", "the
issue") in README.md and docs/*.md (CHANGELOG.md keeps the history), nor in the comments and
docstrings of kw_mm/, which also carry no CPU models and no before/after measurement figures
(those belong in docs/speed_and_memory.md, printed by the benchmark with its machine header).
The placeholders left for figures still to be measured (``<!-- FILL: ... -->``) are reported
by their own test.
"""
import ast
import glob
import io
import os.path as osp
import re
import tokenize
from typing import Iterator, List, Tuple

import pytest

from tests.helpers import REPO_ROOT as ROOT
from tests.test_docs.doc_commands import DOCUMENTS

DATE = r'\b(19|20)\d\d-[01]\d-[0-3]\d\b'
TIME_OF_DAY = r'(?<![\w:.\[])([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?(?![\w:\]])'
SESSION_WORDS = (r'\bthis session\b|\bsession\'s\b|\bstop \d+\b|\bearlier today\b|\bthe issue\b|'
                 r'\ban hour (earlier|before)\b|\bthe same day\b|\byesterday\b|\btonight\b|'
                 r'\bthis morning\b|\bissue \d+\b')
_UNIT = r'(x|ms|MB|GB|MiB|GiB|%)'
BEFORE_AFTER = (rf'\d(\.\d+)?\s*{_UNIT}\s*->\s*\d|\d\s*->\s*\d+(\.\d+)?\s*{_UNIT}(?!\w)|'
                rf'\bwas \d+(\.\d+)?\s*{_UNIT}(?!\w)')
DOCS_PATTERN = re.compile('|'.join(f'(?:{p})' for p in (DATE, TIME_OF_DAY, SESSION_WORDS,
                                                         BEFORE_AFTER)), re.I)
CPU_MODELS = r'\bSapphire Rapids\b|\bEPYC\b|\bXeon\b|\bIce Lake\b|\bZen \d\b'
#: Timings and measured ratios (1.84x) of one machine; sizes (MB) and targets (1.5x) may stay.
MEASUREMENTS = r'\b\d+(\.\d+)?\s?ms\b|\b\d\.\d\d+x\b'
CODE_PATTERN = re.compile('|'.join(f'(?:{p})' for p in (DATE, TIME_OF_DAY, SESSION_WORDS,
                                                         BEFORE_AFTER, CPU_MODELS,
                                                         MEASUREMENTS)), re.I)
FILL = re.compile(r'<!-- FILL:.*?-->', re.S)
PACKAGE_FILES = sorted(glob.glob(osp.join(ROOT, 'kw_mm', '**', '*.py'), recursive=True))


def offending_doc_lines(text: str) -> Iterator[Tuple[int, str]]:
    text = FILL.sub(lambda m: '\n' * m.group().count('\n'), text)
    for number, line in enumerate(text.splitlines(), 1):
        if DOCS_PATTERN.search(line):
            yield number, line.strip()


def comments_and_docstrings(source: str) -> Iterator[Tuple[int, str]]:
    """``(line, text)`` of every comment and every line of every docstring of ``source``."""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                for offset, line in enumerate(body[0].value.value.splitlines()):
                    yield body[0].lineno + offset, line


def offending_code_lines(paths: List[str]) -> List[str]:
    found = []
    for path in paths:
        with open(path) as f:
            source = f.read()
        for number, text in comments_and_docstrings(source):
            if CODE_PATTERN.search(text):
                found.append(f'{osp.relpath(path, ROOT)}:{number}: {text.strip()}')
    return found


def test_the_patterns_catch_what_they_should():
    for bad in ('measured 2026-12-03', 'at 07:06 UTC', 'before this session', 'earlier today',
                'see the issue', 'stop 18', 'KW 1x 1.87x -> 1.81x', '259 -> 281 MB'):
        assert CODE_PATTERN.search(bad), bad
    for bad in ('took 35.7 ms', 'KW 1x ResNet18 1.84x its plain twin', 'an AMD EPYC'):
        assert CODE_PATTERN.search(bad) and not DOCS_PATTERN.search(bad), bad
    for good in ('t = 30 -> 1', 'ratio 1.5x', 'x[1:10]', 'x[10:20]', 'v0.2.0', 'layer4.0.conv1', 'Table 16',
                 'kw1x-resnet18_8xb32_in1k', 'n = b x m', 'within 1.5x of its limit', '48 KB',
                 'items 12-50 MB'):
        assert not CODE_PATTERN.search(good), good


@pytest.mark.parametrize('document', [d for d in DOCUMENTS])
def test_docs_are_timeless(document):
    with open(osp.join(ROOT, document)) as f:
        bad = [f'{document}:{n}: {line}' for n, line in offending_doc_lines(f.read())]
    assert not bad, 'dates, times of day or session words:\n' + '\n'.join(bad)


def test_pytest_ini_is_timeless():
    with open(osp.join(ROOT, 'pytest.ini')) as f:
        bad = [line for line in f if line.lstrip().startswith('#') and CODE_PATTERN.search(line)]
    assert not bad, bad


def test_package_comments_are_timeless():
    bad = offending_code_lines(PACKAGE_FILES)
    assert not bad, ('comments and docstrings with dates, times, CPU models, before/after '
                     'figures or session words:\n' + '\n'.join(bad))


def test_no_fill_markers_left():
    left = []
    for document in DOCUMENTS + ['CHANGELOG.md']:
        with open(osp.join(ROOT, document)) as f:
            text = f.read()
        left += [f'{document}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}'
                 for m in FILL.finditer(text)]
    assert not left, '\n'.join(left)
