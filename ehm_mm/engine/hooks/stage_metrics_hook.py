# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Keep the metrics of every validation and test of a run in one file."""
import json
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import BaseLoop
from mmpretrain.registry import HOOKS

from ehm_mm.utils.atomic_io import atomic_write_text


@HOOKS.register_module()
class StageMetricsHook(Hook):
    """Write each validation's and test's metrics to ``<work_dir>/<file>``.

    The file a job of a study's evaluation chain is read back from
    (``ehm_mm.study``): whatever the recipe (mmpretrain's linear probe or
    fine-tuning through ``tools/train.py``, a k-NN test through
    ``tools/test.py``), its figures land in one JSON file, rewritten
    atomically after every validation and test on the main process::

        {"records": [{"mode": "val", "iter": 400, "epoch": 4,
                      "final": true, "metrics": {"accuracy/top1": 61.2}},
                     ...]}

    ``final`` says that the record measured the weights at the end of
    training (``runner.iter == runner.max_iters``) or, for a test or a
    validation outside training, the weights the run was given. Numeric
    metrics are stored as floats; any other value (a confusion matrix) is
    named under ``non_scalar`` and left out.

    A training resumed from its last checkpoint (a job killed after it
    saved the final epoch, before its validation ended) has nothing left to
    train and would never validate: the hook then validates the resumed
    final weights before the (empty) loop, so every finished training has
    its final record.

    Args:
        out_file (str): File name, relative to the work dir.
            Defaults to ``'stage_metrics.json'``.
    """

    priority = 'LOW'

    def __init__(self, out_file: str = 'stage_metrics.json') -> None:
        if not out_file or osp.isabs(out_file) or osp.dirname(out_file):
            raise ValueError('out_file must be a file name in the work dir, '
                             f'got {out_file!r}')
        self.out_file = out_file
        self.records = []

    def before_train(self, runner) -> None:
        """Validate a training resumed at its end (see the class doc).

        Args:
            runner (Runner): The runner, after ``load_or_resume``.
        """
        resumed_at_end = runner.iter > 0 and runner.iter >= runner.max_iters
        if resumed_at_end and runner.val_loop is not None:
            runner.val_loop.run()

    def after_val_epoch(self,
                        runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        """Record a validation.

        Args:
            runner (Runner): The runner.
            metrics (dict, optional): The validation metrics.
                Defaults to None.
        """
        self._record(runner, 'val', metrics)

    def after_test_epoch(self,
                         runner,
                         metrics: Optional[Dict[str, float]] = None) -> None:
        """Record a test.

        Args:
            runner (Runner): The runner.
            metrics (dict, optional): The test metrics. Defaults to None.
        """
        self._record(runner, 'test', metrics)

    def _record(self, runner, mode: str,
                metrics: Optional[Dict[str, float]]) -> None:
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        final = (not training or mode == 'test'
                 or runner.iter == runner.max_iters)
        scalars, non_scalar = {}, []
        for key, value in (metrics or {}).items():
            number = scalar_value(value)
            if number is None:
                non_scalar.append(key)
            else:
                scalars[key] = number
        self.records.append(
            dict(mode=mode, iter=runner.iter, epoch=runner.epoch,
                 final=final, metrics=scalars, non_scalar=non_scalar))
        if is_main_process():
            atomic_write_text(
                json.dumps(dict(records=self.records), indent=1),
                osp.join(runner.work_dir, self.out_file))


def scalar_value(value) -> Optional[float]:
    """A metric value as a float, or None when it is not one number.

    Args:
        value: A Python, numpy or torch number, or anything else.

    Returns:
        float or None: The number (NaN and infinities kept, for the reader
        to refuse by name).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    numel = getattr(value, 'numel', None)  # torch tensors
    size = numel() if callable(numel) else getattr(value, 'size', None)
    if size != 1 or not hasattr(value, 'item'):
        return None
    value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
