# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Comparing and shrinking configs in the config tests (imported by name:
pytest puts this folder on ``sys.path``)."""
import copy
import uuid
from typing import Optional

import numpy as np
from mmengine.config import Config, ConfigDict
from PIL import Image


def plain(cfg: Config) -> dict:
    """The config as plain dicts, without mmengine's ``_scope_`` tags."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != '_scope_'}
        if isinstance(value, (list, tuple)):
            return type(value)(strip(v) for v in value)
        return value

    return strip(cfg.to_dict())


def shrink(cfg: Config, model: dict, size: int, generator: Optional[dict],
           data_root: str, work_dir: str) -> Config:
    """A tiny version of a pretraining config: 2 iterations on CPU.

    The model takes ``model``'s changes, crops and pipeline masks the
    ``size`` given; the data are the unlabelled images of ``data_root``
    in batches of 2; the config's own sampler and ``collate_fn`` (with any
    ``_scope_`` tag mmengine wrote into it) stay; no validation (and so no
    ``EvaluationSummaryHook``).

    Args:
        cfg (Config): The config as read, changed in place.
        model (dict): Changes merged into ``cfg.model``.
        size (int): Crop size (and input size of a pipeline mask step).
        generator (dict, optional): Changes of the pipeline mask step.
        data_root (str): Folder of images.
        work_dir (str): Work dir.

    Returns:
        Config: ``cfg``.
    """
    cfg.merge_from_dict(dict(model=copy.deepcopy(model)))
    steps = copy.deepcopy(cfg.train_dataloader.dataset.pipeline)
    for step in steps:
        if step.type == 'RandomResizedCrop':
            step.scale = size
        if step.type == 'EvolvedHierarchicalMaskGenerator':
            step.update(input_size=size, **(generator or {}))
    cfg.train_dataloader = ConfigDict(
        batch_size=2,
        num_workers=0,
        persistent_workers=False,
        sampler=copy.deepcopy(cfg.train_dataloader.sampler),
        collate_fn=copy.deepcopy(cfg.train_dataloader.collate_fn),
        dataset=dict(
            type='CustomDataset', data_root=data_root, with_label=False,
            pipeline=steps))
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator'):
        cfg.pop(key, None)
    cfg.custom_hooks = [
        hook for hook in cfg.get('custom_hooks', [])
        if hook.type != 'EvaluationSummaryHook'
    ]
    cfg.merge_from_dict(
        dict(
            optim_wrapper=dict(type='NonFiniteSkipOptimWrapper'),
            param_scheduler=[],
            train_cfg=dict(
                _delete_=True, type='IterBasedTrainLoop', max_iters=2),
            default_hooks=dict(
                logger=dict(interval=1),
                checkpoint=dict(by_epoch=False, interval=2)),
            log_processor=dict(by_epoch=False),
            auto_scale_lr=dict(enable=False),
            randomness=dict(seed=0),
            experiment_name=f'tiny_{uuid.uuid4().hex[:8]}',
            work_dir=work_dir))
    cfg.optim_wrapper.pop('loss_scale', None)
    return cfg


def write_images(folder, count: int = 4) -> str:
    """``count`` random 120 x 136 RGB PNGs (seed 0) in ``folder``.

    Args:
        folder (pathlib.Path): An existing folder.
        count (int): How many. Defaults to 4.

    Returns:
        str: The folder.
    """
    rng = np.random.default_rng(0)
    for i in range(count):
        array = rng.integers(0, 255, size=(120, 136, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f'img_{i}.png')
    return str(folder)
