"""Every relative link of README.md, CHANGELOG.md and docs/*.md reaches a file and, where it names
one, a heading of that file (GitHub's anchors)."""
import os.path as osp
import re
from typing import Set

import pytest

from tests.helpers import REPO_ROOT as ROOT
from tests.test_docs.doc_commands import DOCUMENTS

LINK = re.compile(r'\[[^\]]*\]\((?P<target>[^)\s]+)\)')
FENCE = re.compile(r'^[ \t]*```.*?^[ \t]*```', re.M | re.S)


def anchors(path: str) -> Set[str]:
    """GitHub's anchors of the headings of the markdown file ``path``."""
    with open(path) as f:
        text = FENCE.sub('', f.read())
    found = set()
    for heading in re.findall(r'^#{1,6}\s+(.+?)\s*$', text, re.M):
        slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
        found.add(slug)
    return found


def test_anchor_rule():
    assert 'coco-mask-r-cnn--fpn-1x-table-3' == re.sub(
        r'[^\w\- ]', '', 'COCO: Mask R-CNN + FPN 1x (Table 3)'.lower()).replace(' ', '-')


@pytest.mark.parametrize('document', DOCUMENTS + ['CHANGELOG.md'])
def test_links_resolve(document):
    with open(osp.join(ROOT, document)) as f:
        text = FENCE.sub('', f.read())
    broken = []
    for match in LINK.finditer(text):
        target = match['target']
        if re.match(r'^[a-z]+://', target) or target.startswith('mailto:'):
            continue
        path, _, anchor = target.partition('#')
        full = osp.normpath(osp.join(ROOT, osp.dirname(document), path)) if path else \
            osp.join(ROOT, document)
        if not osp.exists(full):
            broken.append(f'{target}: no file {osp.relpath(full, ROOT)}')
        elif anchor and full.endswith('.md') and anchor not in anchors(full):
            broken.append(f'{target}: no heading #{anchor} in {osp.relpath(full, ROOT)}')
    assert not broken, f'{document}:\n' + '\n'.join(broken)
