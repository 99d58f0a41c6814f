# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Running an mmengine Runner inside the test process.

A Runner makes its default scope, message hub, logger and visualizer the
current instances; later tests (in any file) would inherit them, e.g. a
leftover ``mmdet`` default scope sends their registry look-ups to mmdet's
registry. Tests import this module by name (``tests/`` is on ``sys.path``
through its ``conftest.py``).
"""
import os.path as osp
import uuid
from contextlib import contextmanager
from typing import Iterator, Optional

from mmengine.config import Config
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
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


def runner_config(config: str, root: str, name: str,
                  iters: Optional[int] = None) -> Config:
    """A test config ready for a Runner in this process.

    Work dir and data under ``root``, a unique experiment name (the
    Runner's scope, hub and logger are its own) and no deterministic
    algorithms; ``collate_fn`` stays as read (``import ehm_mm`` makes the
    collate functions accept mmengine's ``_scope_`` tag). With ``iters``:
    train that many iterations
    at a constant learning rate, validate and checkpoint at the end.

    Args:
        config (str): Path of the config.
        root (str): Folder for ``work`` and ``data``.
        name (str): Prefix of the experiment name.
        iters (int, optional): Length of a short run. Defaults to None
            (the config's schedule).

    Returns:
        Config: The config.
    """
    cfg = Config.fromfile(config)
    cfg.work_dir = osp.join(root, 'work')
    cfg.train_dataloader.dataset.data_root = osp.join(root, 'data')
    cfg.val_dataloader.dataset.data_root = osp.join(root, 'data')
    cfg.experiment_name = f'{name}_{uuid.uuid4().hex[:8]}'
    cfg.randomness.deterministic = False
    if iters is not None:
        cfg.train_cfg.max_iters = iters
        cfg.train_cfg.val_interval = iters
        cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0,
                                    by_epoch=False, begin=0)]
        cfg.default_hooks.checkpoint.interval = iters
    return cfg


def train_in_process(cfg: Config) -> Runner:
    """Build the config's Runner and train, dropping its globals after.

    Args:
        cfg (Config): The config (e.g. from :func:`runner_config`).

    Returns:
        Runner: The trained runner (its ``message_hub`` stays readable).
    """
    with restoring_mmengine_globals():
        runner = Runner.from_cfg(cfg)
        runner.train()
    return runner
