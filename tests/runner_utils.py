# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Running an mmengine Runner inside the test process.

A Runner makes its default scope, message hub, logger and visualizer the
current instances; later tests (in any file) would inherit them, e.g. a
leftover ``mmdet`` default scope sends their registry look-ups to mmdet's
registry. Tests import this module by name (``tests/`` is on ``sys.path``
through its ``conftest.py``).
"""
from contextlib import contextmanager
from typing import Iterator

from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import DefaultScope
from mmengine.visualization import Visualizer


@contextmanager
def restoring_mmengine_globals() -> Iterator[None]:
    """Drop the default scope, message hub, logger and visualizer made inside.

    Instances that existed before the block are kept; only the ones created
    inside it are removed, even when the block raises.
    """
    managed = (DefaultScope, MessageHub, MMLogger, Visualizer)
    before = {cls: set(cls._instance_dict) for cls in managed}
    try:
        yield
    finally:
        for cls, names in before.items():
            for name in list(cls._instance_dict):
                if name not in names:
                    cls._instance_dict.pop(name)
