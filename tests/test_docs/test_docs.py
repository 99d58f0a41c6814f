# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The README and docs/ point at things that exist.

- every relative link resolves to a file (and, with ``#anchor``, to a
  heading of that Markdown file);
- every repository path they name (``configs/...``, ``tools/...``,
  ``ehm_mm/...``, ``tests/...``, ``requirements/...``) exists, with shell
  brace lists and globs expanded;
- every ``configs/...py`` they name builds with ``Config.fromfile``;
- every "design section N" that the code or docs cite is a numbered section
  of ``docs/en/design.md``.
"""
import glob
import os
import os.path as osp
import re
from typing import Dict, List, Set, Tuple

import pytest
from mmengine.config import Config

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
DESIGN = osp.join(REPO, 'docs', 'en', 'design.md')

LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
PATH = re.compile(r'(?<![\w./:-])((?:configs|tools|ehm_mm|tests|requirements)'
                  r'/[\w./{},*+-]*[\w/}*])')
DESIGN_REF = re.compile(r'design\s+section\s+(\d+)', re.IGNORECASE)


def _doc_files() -> List[str]:
    files = [osp.join(REPO, 'README.md')]
    for root, _, names in os.walk(osp.join(REPO, 'docs')):
        files.extend(
            osp.join(root, n) for n in sorted(names) if n.endswith('.md'))
    return files


DOCS = _doc_files()


def _rel(path: str) -> str:
    return osp.relpath(path, REPO)


def _strip_code(text: str) -> str:
    """Text outside fenced code blocks (links there are not links)."""
    return re.sub(r'^```.*?^```', '', text, flags=re.MULTILINE | re.DOTALL)


def heading_anchors(markdown: str) -> Set[str]:
    """GitHub's anchors of the headings of a Markdown text.

    Args:
        markdown (str): The text.

    Returns:
        set[str]: Lower case, punctuation dropped, spaces as hyphens,
        repeated headings numbered ``-1``, ``-2``, ...
    """
    anchors: Dict[str, int] = {}
    for line in _strip_code(markdown).splitlines():
        match = re.match(r'#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not match:
            continue
        title = re.sub(r'`|\*\*?|__?', '', match.group(1)).strip().lower()
        slug = re.sub(r'[^\w\- ]', '', title).replace(' ', '-')
        count = anchors.get(slug)
        anchors[slug] = 0 if count is None else count + 1
        if count is not None:
            anchors[f'{slug}-{count + 1}'] = 0
    return set(anchors)


def expand(path: str) -> List[str]:
    """Expand shell brace lists (``a_{1,2}.py``) of a path.

    Args:
        path (str): A path, possibly with ``{x,y}`` groups.

    Returns:
        list[str]: The paths it stands for.
    """
    match = re.search(r'\{([^{}]*)\}', path)
    if match is None:
        return [path]
    return [
        p for option in match.group(1).split(',')
        for p in expand(path[:match.start()] + option + path[match.end():])
    ]


def named_paths(text: str) -> List[str]:
    """Repository paths named anywhere in a text, braces expanded.

    Args:
        text (str): Markdown text.

    Returns:
        list[str]: Paths relative to the repository root.
    """
    found = []
    for match in PATH.finditer(text):
        path = match.group(1).rstrip('.,')
        found.extend(expand(path))
    return found


def _links() -> List[Tuple[str, str]]:
    return [(_rel(doc), target) for doc in DOCS
            for target in LINK.findall(_strip_code(open(doc).read()))
            if not re.match(r'[a-z]+:', target)]


def _paths() -> List[Tuple[str, str]]:
    return sorted({(_rel(doc), path)
                   for doc in DOCS for path in named_paths(open(doc).read())})


def _configs() -> List[str]:
    return sorted({
        path
        for _, path in _paths()
        if path.startswith('configs/') and path.endswith('.py')
        and '*' not in path
    })


def test_helpers():
    assert expand('a_{1,2}e_{x,y}.py') == [
        'a_1e_x.py', 'a_1e_y.py', 'a_2e_x.py', 'a_2e_y.py'
    ]
    assert named_paths('see `configs/a_{b,c}.py`, or tools/x.sh.') == [
        'configs/a_b.py', 'configs/a_c.py', 'tools/x.sh'
    ]
    assert named_paths('../../ehm_mm/configs/x.py mmdet/configs/y.py') == []
    assert heading_anchors('# A `b` c\n## 5. Retrieval [design]\n# A b c') \
        == {'a-b-c', '5-retrieval-design', 'a-b-c-1'}
    assert _links() and _paths() and _configs()


@pytest.mark.parametrize('doc, target', _links())
def test_relative_link_resolves(doc, target):
    path, _, anchor = target.partition('#')
    file = osp.join(REPO, doc) if not path else osp.normpath(
        osp.join(REPO, osp.dirname(doc), path))
    assert osp.exists(file), f'{doc}: link {target!r} points at nothing'
    if anchor and file.endswith('.md'):
        assert anchor in heading_anchors(open(file).read()), (
            f'{doc}: link {target!r}: no heading #{anchor} in {_rel(file)}')


@pytest.mark.parametrize('doc, path', _paths())
def test_named_path_exists(doc, path):
    matches = glob.glob(osp.join(REPO, path))
    assert matches, f'{doc} names {path}, which does not exist'


@pytest.mark.parametrize('config', _configs())
def test_named_config_builds(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    assert cfg.filename.endswith(config.split('/')[-1])


def _design_refs() -> List[Tuple[str, str]]:
    refs = []
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith('.')
                   and d not in ('work_dirs', 'data', 'build')]
        for name in names:
            if name.endswith(('.py', '.md', '.sh')):
                path = osp.join(root, name)
                with open(path, encoding='utf-8', errors='replace') as f:
                    for number in DESIGN_REF.findall(f.read()):
                        refs.append((_rel(path), number))
    return sorted(set(refs))


def test_design_references_resolve():
    refs = _design_refs()
    assert refs, 'no "design section N" reference found'
    sections = set(
        re.findall(r'^## (\d+)\. ', open(DESIGN).read(), re.MULTILINE))
    unresolved = [(f, n) for f, n in refs if n not in sections]
    assert not unresolved, (
        f'"design section N" without such a section in docs/en/design.md '
        f'(sections {sorted(sections)}): {unresolved}')
