# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import json
import os.path as osp
from typing import Any, Dict, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class EvaluationSummaryHook(Hook):
    """Validate before training and keep every validation result in a file.

    Self-supervised pretraining is judged by how its numbers move: with
    ``validate_before_train`` the hook runs the validation loop once before
    the first iteration (mmengine's loops only validate after training
    steps), and after every validation it rewrites
    ``<work_dir>/<out_file>``::

        {"start": {...metrics before training...},
         "end": {...latest metrics...},
         "history": [{"epoch": e, "iter": i, "metrics": {...}}, ...]}

    A resumed run skips the validation before training (its starting point
    was measured by the first run) and appends to the existing file.

    Args:
        validate_before_train (bool): Run the validation loop before the
            first iteration of a fresh run. Defaults to True.
        out_file (str): File name, relative to the work dir. Defaults to
            ``'evaluation_summary.json'``.
    """

    priority = 'LOW'

    def __init__(self,
                 validate_before_train: bool = True,
                 out_file: str = 'evaluation_summary.json') -> None:
        if not out_file or osp.isabs(out_file):
            raise ValueError('out_file must be a file name relative to the '
                             f'work dir, got {out_file!r}')
        self.validate_before_train = validate_before_train
        self.out_file = out_file
        self.summary: Dict = dict(start=None, end=None, history=[])

    def _path(self, runner) -> str:
        return osp.join(runner.work_dir, self.out_file)

    def before_train(self, runner) -> None:
        """Load the summary of a resumed run or validate a fresh one.

        Args:
            runner (Runner): The runner.
        """
        resumed = runner.iter > 0
        if resumed and osp.exists(self._path(runner)):
            with open(self._path(runner)) as f:
                self.summary = json.load(f)
        if resumed or not self.validate_before_train:
            return
        if runner.val_loop is None:
            raise ValueError(
                'EvaluationSummaryHook(validate_before_train=True) needs '
                'val_dataloader, val_cfg and val_evaluator in the config')
        runner.val_loop.run()

    def after_val_epoch(self,
                        runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        """Record the metrics of one validation.

        Args:
            runner (Runner): The runner.
            metrics (dict, optional): The validation metrics.
                Defaults to None.
        """
        metrics = {k: _to_builtin(v) for k, v in (metrics or {}).items()}
        if self.summary['start'] is None:
            self.summary['start'] = metrics
        self.summary['end'] = metrics
        self.summary['history'].append(
            dict(epoch=runner.epoch, iter=runner.iter, metrics=metrics))
        if is_main_process():
            with open(self._path(runner), 'w') as f:
                json.dump(self.summary, f, indent=2)
            print_log(
                f'Evaluation summary: start {self.summary["start"]}, '
                f'now {metrics} (written to {self._path(runner)})',
                logger='current')


def _to_builtin(value: Any) -> Any:
    """Turn numpy / torch scalars into JSON-friendly Python numbers."""
    if hasattr(value, 'item'):
        return value.item()
    return value
