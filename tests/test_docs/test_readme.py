"""README.md stays a short entry point: the details live in docs/."""
import glob
import os.path as osp
import re

from tests.helpers import REPO_ROOT as ROOT

#: The README's limit in lines (mmpretrain's and mmdet's project READMEs are about 200).
MAX_LINES = 250


def test_readme_is_short_and_has_the_openmmlab_sections():
    with open(osp.join(ROOT, 'README.md')) as f:
        text = f.read()
    assert len(text.splitlines()) <= MAX_LINES
    sections = re.findall(r'^## (.+)$', text, re.M)
    assert sections[:5] == ['Introduction', 'Installation', 'Get started', 'Model zoo', 'Usage']
    assert 'Citation' in sections
    for link in ('https://arxiv.org/abs/2308.08361', 'https://github.com/OSVAI/KernelWarehouse'):
        assert link in text


def test_every_docs_page_is_indexed_and_says_what_it_is_for():
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    for page in sorted(glob.glob(osp.join(ROOT, 'docs', '*.md'))):
        name = osp.basename(page)
        assert f'(docs/{name})' in readme, f'README.md does not link docs/{name}'
        with open(page) as f:
            lines = f.read().splitlines()
        assert lines[0].startswith('# ') and lines[1] == '', name
        assert re.match(r'^This page (is for|says|lists|explains)', lines[2]), \
            f'docs/{name} does not start by saying what it is for: {lines[2]!r}'
