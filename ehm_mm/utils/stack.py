# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Which install profile an environment has and which one a config needs.

``tools/install.sh`` installs one of two profiles:

* ``pretrain``: torch, torchvision, mmengine, mmpretrain and ``mmcv-lite``
  (pure Python, no compiler). Enough for EHM-MAE pretraining, the demo and
  the mmpretrain fine-tuning / linear-probing configs.
* ``full``: the above with ``mmcv`` built with its compiled ops instead of
  ``mmcv-lite``, plus mmsegmentation and mmdet (the downstream configs).

A downstream config run on the ``pretrain`` profile would fail on an import
deep inside mmseg or mmdet; :func:`check_config_stack` says what to install
instead, before anything is built. The module uses the standard library
only, so ``tools/install.sh`` runs it as a script before mmengine exists::

    python ehm_mm/utils/stack.py profile     # prints full, pretrain or none
    python ehm_mm/utils/stack.py report      # profile, versions, ehm_mm
    python ehm_mm/utils/stack.py mmcv-dists  # installed mmcv distributions
    python ehm_mm/utils/stack.py config CONFIG         # can CONFIG run here?
    python ehm_mm/utils/stack.py requirements FILE...  # what is missing
"""
import argparse
import ast
import importlib
import importlib.metadata
import importlib.util
import os.path as osp
import re
import sys
import warnings
from typing import List, Optional, Set

#: Packages only the ``full`` profile has: module name -> distribution name.
FULL_ONLY_PACKAGES = {'mmseg': 'mmsegmentation', 'mmdet': 'mmdet'}
#: Distributions that provide the ``mmcv`` module (only one may be
#: installed: they overwrite each other's files).
MMCV_DISTRIBUTIONS = ('mmcv', 'mmcv-lite', 'mmcv-full')
#: Distributions an environment's stack is made of: kept at the installed
#: version when the stack is used as it is.
STACK_DISTRIBUTIONS = ('torch', 'torchvision', 'mmengine', 'mmpretrain',
                       'mmsegmentation', 'mmdet') + MMCV_DISTRIBUTIONS
INSTALL_FULL = 'bash tools/install.sh --profile full'

# A config string that names a full-only package: a scope ('mmdet'), a
# scoped type or base ('mmdet.X', 'mmdet::X') or ehm_mm's downstream
# modules ('ehm_mm.downstream.mmdet').
_PACKAGE_REF = re.compile(
    r'^(?:ehm_mm\.downstream\.)?(mmseg|mmdet)(?:$|\.|::)')


class StackError(RuntimeError):
    """The environment lacks a package the config needs."""


def module_available(name: str) -> bool:
    """Whether ``import name`` would find the module (without importing it).

    Args:
        name (str): Dotted module name, e.g. ``'mmcv._ext'``.

    Returns:
        bool: True when a spec is found; False when the module or one of its
        parents is missing or cannot be imported.
    """
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def mmcv_distributions() -> List[str]:
    """The installed distributions that provide the ``mmcv`` module.

    Returns:
        list[str]: ``'name version'`` of each, e.g. ``['mmcv-lite 2.1.0']``.
    """
    found = []
    for name in MMCV_DISTRIBUTIONS:
        try:
            found.append(f'{name} {importlib.metadata.version(name)}')
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def mmcv_ops_work() -> bool:
    """Whether mmcv's compiled ops load (``from mmcv.ops import nms``).

    This imports mmcv and its extension, so an ABI mismatch between the
    extension and torch counts as not working.

    Returns:
        bool: True when ``mmcv.ops.nms`` imports.
    """
    try:
        from mmcv.ops import nms  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def installed_profile() -> Optional[str]:
    """The install profile this environment satisfies.

    Returns:
        str, optional: ``'full'`` when torch, mmengine, mmpretrain, mmcv
        with working compiled ops, mmseg and mmdet all import;
        ``'pretrain'`` when torch, torchvision, mmengine, mmpretrain and
        mmcv (any build) import; None otherwise.
    """
    for name in ('torch', 'torchvision', 'mmengine', 'mmcv', 'mmpretrain'):
        try:
            importlib.import_module(name)
        except ImportError:
            return None
    if not mmcv_ops_work():
        return 'pretrain'
    for name in FULL_ONLY_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            return 'pretrain'
    return 'full'


def describe_stack() -> str:
    """One line naming the installed stack's versions and mmcv build.

    Returns:
        str: e.g. ``'torch 2.14.1, ..., mmpretrain 1.2.0 (mmcv-lite 2.1.0)'``.
    """
    found = []
    for name in ('torch', 'torchvision', 'mmengine', 'mmcv', 'mmpretrain',
                 'mmseg', 'mmdet'):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found.append(f'{name} {getattr(module, "__version__", "?")}')
    dists = mmcv_distributions()
    return (', '.join(found) or 'nothing installed') + (
        f' ({", ".join(dists)})' if dists else '')


def ehm_mm_location() -> str:
    """Import ``ehm_mm`` and say where it comes from.

    Returns:
        str: The directory that holds the imported ``ehm_mm`` package (the
        repository for an editable install), ``'none'`` when it is not
        installed, or ``'error: ...'`` when importing it fails.
    """
    if not module_available('ehm_mm'):
        return 'none'
    try:
        module = importlib.import_module('ehm_mm')
    except Exception as e:  # reported, not raised: the installer decides
        return f'error: {type(e).__name__}: {e}'.replace('\n', ' ')
    return osp.dirname(osp.dirname(osp.abspath(module.__file__)))


def _local_base_files(tree: ast.Module, filename: str) -> List[str]:
    """Paths of the ``_base_`` files of a config that are local files."""
    bases: List[str] = []
    for node in tree.body:
        if not isinstance(node, ast.Assign):
            continue
        if not any(
                isinstance(t, ast.Name) and t.id == '_base_'
                for t in node.targets):
            continue
        values = node.value.elts if isinstance(
            node.value, (ast.List, ast.Tuple)) else [node.value]
        for value in values:
            if (isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                    and '::' not in value.value):
                bases.append(
                    osp.normpath(
                        osp.join(osp.dirname(filename), value.value)))
    return bases


def config_packages(config_path: str) -> Set[str]:
    """The full-only packages (``mmseg``, ``mmdet``) a config needs.

    Reads the config file and its local ``_base_`` files without executing
    them: a config needs a package when it inherits from it
    (``'mmdet::...'``), uses its scope (``default_scope='mmdet'``,
    ``type='mmdet.X'``), imports it (``custom_imports`` of
    ``'ehm_mm.downstream.mmdet'`` or a lazy ``from mmdet... import``).

    Args:
        config_path (str): The config file.

    Returns:
        set[str]: Module names out of :data:`FULL_ONLY_PACKAGES`.
    """
    if not osp.isfile(config_path):
        raise FileNotFoundError(f'config not found: {config_path}')
    needed: Set[str] = set()
    todo, seen = [osp.abspath(config_path)], set()
    while todo:
        path = todo.pop()
        if path in seen or not osp.isfile(path):
            continue  # a missing base is reported by mmengine's parser
        seen.add(path)
        with open(path, encoding='utf-8') as f:
            text = f.read()
        if not path.endswith('.py'):
            needed.update(
                re.findall(r'(?<![\w.])(mmseg|mmdet)(?=::|\.[A-Za-z])',
                           text))
            continue
        tree = ast.parse(text, filename=path)
        for node in ast.walk(tree):
            names: List[str] = []
            if isinstance(node, ast.Constant) and isinstance(
                    node.value, str):
                names = [node.value]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                match = _PACKAGE_REF.match(name)
                if match:
                    needed.add(match.group(1))
        todo.extend(_local_base_files(tree, path))
    return needed


def missing_for_packages(packages: Set[str]) -> List[str]:
    """What this environment lacks to run code that imports ``packages``.

    Args:
        packages (set[str]): Module names out of :data:`FULL_ONLY_PACKAGES`.

    Returns:
        list[str]: Human-readable missing pieces (empty when nothing is
        missing).
    """
    missing = [
        f'{FULL_ONLY_PACKAGES[name]} (module {name})'
        for name in sorted(packages) if not module_available(name)
    ]
    if packages and not module_available('mmcv._ext'):
        missing.append("mmcv's compiled ops (mmcv._ext)")
    return missing


def check_config_stack(config_path: str) -> None:
    """Fail early, saying what to install, when a config needs ``full``.

    Call it before ``Config.fromfile``: a downstream config inherits from
    mmseg/mmdet, so on the ``pretrain`` profile even parsing it fails.

    Args:
        config_path (str): The config file.

    Raises:
        StackError: When the config needs mmseg or mmdet (and mmcv's
            compiled ops) and this environment lacks one of them.
    """
    packages = config_packages(config_path)
    missing = missing_for_packages(packages)
    if not missing:
        return
    dists = mmcv_distributions()
    have = ', '.join(dists) if dists else 'no mmcv distribution'
    needs = ' and '.join(FULL_ONLY_PACKAGES[name] for name in sorted(packages))
    raise StackError(
        f'{config_path} needs {needs} and mmcv built with its compiled ops '
        f'(the "full" install profile). This environment ({sys.prefix}; '
        f'{have}) lacks: {", ".join(missing)}.\nInstall the full stack '
        f'with\n    {INSTALL_FULL}\n(it replaces mmcv-lite with mmcv '
        f'built with its ops: about 20 minutes of compiling on 2 cores the '
        f'first time).')


def requirement_actions(paths: List[str]) -> List[str]:
    """What ``tools/install.sh`` does about requirement files when the stack
    is used as it is.

    A stack package (torch, mmcv, mmengine, ...) whose installed version
    differs from its pin is kept and reported; any other requirement that
    is missing or unsatisfied is installed.

    Args:
        paths (list[str]): Requirement files (``-r`` lines are not
            followed).

    Returns:
        list[str]: ``'install REQ'`` or ``'keep NAME VERSION (pinned
        REQ)'`` lines.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    actions = []
    for path in paths:
        with open(path, encoding='utf-8') as f:
            lines = [line.split('#')[0].strip() for line in f]
        for line in filter(None, lines):
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate():
                continue
            try:
                version = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                version = None
            if version is not None and req.specifier.contains(
                    version, prereleases=True):
                continue
            if (canonicalize_name(req.name) in STACK_DISTRIBUTIONS
                    and version is not None):
                actions.append(f'keep {req.name} {version} (pinned {req})')
            else:
                actions.append(f'install {req}')
    return actions


def main(argv: Optional[List[str]] = None) -> int:
    """Command line used by ``tools/install.sh``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'query',
        choices=['profile', 'report', 'mmcv-dists', 'config', 'requirements'],
        help='profile: print the installed profile (full, pretrain or '
        'none); report: the profile, a line of versions and where ehm_mm '
        'imports from (or none), one per line; mmcv-dists: print the '
        'installed mmcv distributions; '
        'config: check that the config FILE can run here; requirements: '
        'print what to install (or keep) for the requirement FILEs')
    parser.add_argument('files', nargs='*', metavar='FILE')
    args = parser.parse_args(argv)
    # mmcv-lite warns on import that its compiled ops are missing: the
    # profile says so already.
    warnings.filterwarnings('ignore', message='Fail to import')
    if args.query == 'profile':
        print(installed_profile() or 'none')
    elif args.query == 'report':
        print(installed_profile() or 'none')
        print(describe_stack())
        print(ehm_mm_location())
    elif args.query == 'mmcv-dists':
        print('\n'.join(mmcv_distributions()))
    elif args.query == 'requirements':
        print('\n'.join(requirement_actions(args.files)))
    else:
        if len(args.files) != 1:
            parser.error('config needs one config FILE')
        try:
            check_config_stack(args.files[0])
        except StackError as e:
            print(e, file=sys.stderr)
            return 1
        print(f'{args.files[0]}: the installed stack suffices')
    return 0


if __name__ == '__main__':
    sys.exit(main())
