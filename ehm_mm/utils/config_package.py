# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""``_base_ = 'ehm_mm::<folder>/<config>.py'``: our configs for other projects.

mmengine 0.10.7 resolves ``pkg::dir/file.py`` in a config's ``_base_``
through its table ``mmengine.config.utils.MODULE2PACKAGE`` (OpenMMLab's own
packages only) and reads the file from ``<package folder>/.mim/configs``,
after reading ``<package folder>/.mim/model-index.yml``. ehm_mm ships its
``configs/`` and ``tools/`` there (``ehm_mm/.mim``: links to the repository's
folders in a checkout and an editable install, copies in a wheel), and
:func:`register_config_package` adds the table entry (``import ehm_mm``
does this).

The entry names the module :data:`CONFIG_ANCHOR`, not the distribution:
mmengine finds the folder of a *distribution* from its install location,
which for an editable install (``pip install -e``, what
``tools/install.sh`` does) is ``site-packages``, where no ``ehm_mm`` folder
is. For a name that is no distribution it takes the folder of the module
Python imports, i.e. the ``ehm_mm`` package this process runs.
"""
from mmengine.config.utils import MODULE2PACKAGE

#: The scope written before ``::``.
PACKAGE_SCOPE = 'ehm_mm'
#: The module whose folder mmengine reads ``.mim`` from.
CONFIG_ANCHOR = 'ehm_mm.registry'


def register_config_package() -> None:
    """Let mmengine resolve ``_base_ = 'ehm_mm::<folder>/<config>.py'``.

    Adds ``ehm_mm`` to mmengine's table of packages whose configs can be
    inherited. Only configs read after this call (after ``import ehm_mm``)
    can name ``ehm_mm::``.

    Raises:
        RuntimeError: When the table already maps ``ehm_mm`` elsewhere.
    """
    known = MODULE2PACKAGE.setdefault(PACKAGE_SCOPE, CONFIG_ANCHOR)
    if known != CONFIG_ANCHOR:
        raise RuntimeError(
            f"mmengine's MODULE2PACKAGE maps {PACKAGE_SCOPE!r} to "
            f'{known!r}, not {CONFIG_ANCHOR!r}: `{PACKAGE_SCOPE}::` configs '
            'would be read from another package.')
