# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Packaging for ehm_mm (Evolved Hierarchical Masking for OpenMMLab).

The stack is installed by ``tools/install.sh`` in one of two profiles
(``--profile pretrain``: torch, mmengine, mmpretrain, mmcv-lite;
``--profile full``: mmcv with compiled ops, mmseg, mmdet as well). mmcv is
not a requirement here: it is either ``mmcv-lite`` or ``mmcv`` built with
ops, which pip cannot express; the installer picks one.

Like OpenMMLab's packages, ehm_mm ships its configs, tools and model index
as package data under ``ehm_mm/.mim/`` (mmengine reads ``ehm_mm::`` configs
and ``mim`` its tools from there). In the repository ``ehm_mm/.mim/*`` are
links to ``configs/``, ``tools/`` and ``model-index.yml``, so a checkout and
an editable install use the files in place; building a wheel copies them.
"""
import os.path as osp

from setuptools import find_packages, setup

#: ``ehm_mm/.mim`` files a wheel carries (globs follow the links).
MIM_PACKAGE_DATA = [
    '.mim/model-index.yml',
    '.mim/configs/configs/**/*.py',
    '.mim/tools/**/*.py',
    '.mim/tools/**/*.sh',
]
#: Data files of the package itself (the ImageNet-100 class list).
DATA_PACKAGE_DATA = ['datasets/data/*.txt']


def read_version() -> str:
    """Read ``__version__`` from ``ehm_mm/version.py``."""
    namespace: dict = {}
    with open(osp.join(osp.dirname(__file__), 'ehm_mm', 'version.py')) as f:
        exec(f.read(), namespace)
    return namespace['__version__']


def read_readme() -> str:
    """The README's text, shown as the package's long description."""
    path = osp.join(osp.dirname(__file__), 'README.md')
    if not osp.exists(path):
        return ''
    with open(path, encoding='utf-8') as f:
        return f.read()


def read_requirements(name: str) -> list:
    """Read a requirements file, dropping comments and blank lines."""
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    with open(path) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line]


setup(
    name='ehm_mm',
    version=read_version(),
    description='Evolved Hierarchical Masking (EHM) for masked image '
    'modeling in OpenMMLab',
    long_description=read_readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    include_package_data=True,
    package_data={'ehm_mm': MIM_PACKAGE_DATA + DATA_PACKAGE_DATA},
    python_requires='>=3.8',
    install_requires=read_requirements('pretrain.txt'),
    extras_require=dict(
        downstream=read_requirements('downstream.txt'),
        tests=read_requirements('tests.txt')),
    license='Apache License 2.0',
    zip_safe=False,
)
