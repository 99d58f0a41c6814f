# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""A hook that kills a whole study mid-pretraining, for the resume tests.

Imported by tests/data/configs/cluster_study/tiny_study.py (with tests/ on
PYTHONPATH). It does nothing unless ``EHM_TEST_KILL_AT_ITER`` and
``EHM_TEST_KILL_GROUP_FILE`` are set, and only in a run whose work dir
contains ``EHM_TEST_KILL_RUN`` (when set).
"""
import os
import signal

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class KillAtIterHook(Hook):
    """SIGKILL the study after iteration ``$EHM_TEST_KILL_AT_ITER``.

    Every rank kills the process group named in the file
    ``$EHM_TEST_KILL_GROUP_FILE`` (the study tool's, started in a session
    of its own by the test: the tool, the run's driver and torchrun's
    agent), then itself (torchrun starts its workers in sessions of their
    own). Like a job killed by its scheduler, nothing is cleaned up.
    """

    priority = 'LOWEST'  # after the checkpoint hook of the same iteration

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Kill when the iteration just trained is the one named."""
        at = os.environ.get('EHM_TEST_KILL_AT_ITER')
        group_file = os.environ.get('EHM_TEST_KILL_GROUP_FILE')
        if not at or not group_file or runner.iter + 1 != int(at):
            return
        if os.environ.get('EHM_TEST_KILL_RUN', '') not in runner.work_dir:
            return
        with open(group_file) as f:
            group = int(f.read().strip())
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:  # another rank was first
            pass
        os.kill(os.getpid(), signal.SIGKILL)
