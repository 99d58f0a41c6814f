# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import contextlib
import os.path as osp
import warnings
from typing import Iterator, List

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ehm_mm.utils.atomic_io import atomic_write_text, remove_stale_temporaries
from ehm_mm.utils.checkpoint_digest import add_tensor_digests

from .divergence_guard_hook import (
    ADVICE,
    TrainingDivergedError,
    last_checkpoint_text,
    nonfinite_tensors,
)


class _DeferredRemovals:
    """A file backend whose ``remove`` / ``rmtree`` wait for ``flush``.

    Everything else is passed through to the wrapped backend.

    Args:
        backend: The file backend to wrap.
    """

    def __init__(self, backend) -> None:
        self._backend = backend
        self.pending: List[str] = []

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def remove(self, path: str) -> None:
        self.pending.append(path)

    def rmtree(self, path: str) -> None:
        self.pending.append(path)

    def flush(self, keep: List[str]) -> None:
        """Remove what was asked for, except the paths in ``keep``."""
        keep_set = {osp.abspath(p) for p in keep if p}
        for path in self.pending:
            if osp.abspath(path) in keep_set:
                continue
            if self._backend.isfile(path):
                self._backend.remove(path)
            elif self._backend.isdir(path):
                self._backend.rmtree(path)
        self.pending.clear()


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` that cannot lose the last checkpoint.

    mmengine 0.10.7 deletes the oldest checkpoint before it writes the new
    one, writes the new one in place and rewrites ``last_checkpoint`` in
    place; a crash during a save can leave only a truncated file and a
    ``last_checkpoint`` naming a deleted one. This hook keeps every option of
    :class:`mmengine.hooks.CheckpointHook` and changes the order and the
    writes, for checkpoints in a local folder:

    1. every checkpoint file (periodic, best, last) is written to a
       temporary file in the same folder, fsynced and renamed
       (:class:`~ehm_mm.utils.atomic_io.AtomicLocalBackend`);
    2. ``last_checkpoint`` is then updated the same way;
    3. only then are checkpoints beyond ``max_keep_ckpts`` and the previous
       best checkpoint deleted.

    A killed run therefore always leaves the previous complete checkpoint
    and a ``last_checkpoint`` naming a complete file, so ``--resume`` works.
    A model whose weights or buffers hold NaN or inf is never saved: the
    save raises :class:`~ehm_mm.engine.hooks.TrainingDivergedError` naming
    the tensors and the last good checkpoint, which is kept (and stays in
    ``last_checkpoint``).
    Temporary files left by a killed save are deleted at the next
    ``before_train``. For non-local ``out_dir`` backends (``backend_args``
    naming another backend) the writes are the backend's own; a warning
    says so, and step 3 still comes last.

    Every checkpoint stores the sha256 of each of its tensors
    (:mod:`ehm_mm.utils.checkpoint_digest`), which the project's loader
    verifies, so a damaged byte is named instead of loaded.

    Args:
        *args: Positional arguments of ``CheckpointHook``.
        tensor_digests (bool): Store the sha256 of every tensor in the
            checkpoint. Turn off for very large checkpoints where hashing
            at every save and load costs too much. Defaults to True.
        **kwargs: Keyword arguments of ``CheckpointHook``; the deprecated
            ``file_client_args`` is refused (use ``backend_args``).
    """

    def __init__(self, *args, tensor_digests: bool = True, **kwargs) -> None:
        if kwargs.get('file_client_args') is not None:
            raise ValueError(
                'AtomicCheckpointHook does not accept the deprecated '
                '`file_client_args`; use `backend_args` instead')
        super().__init__(*args, **kwargs)
        self.tensor_digests = tensor_digests
        self.atomic = False
        self._prepared = False

    def before_train(self, runner) -> None:
        """Choose the atomic backend for a local ``out_dir``; clean up.

        Runs once: a validation before training (``EvaluationSummaryHook``)
        may save a best checkpoint before the runner calls this hook.

        Args:
            runner (Runner): The runner of the training process.
        """
        if self._prepared:
            return
        self._prepared = True
        out_dir = self.out_dir if self.out_dir is not None else \
            runner.work_dir
        backend = get_file_backend(out_dir, backend_args=self.backend_args)
        self.atomic = isinstance(backend, LocalBackend)
        if self.atomic:
            self.backend_args = dict(backend='ehm_atomic')
        else:
            warnings.warn(
                f'AtomicCheckpointHook: out_dir {out_dir!r} uses '
                f'{type(backend).__name__}; checkpoint files are written by '
                'that backend, not atomically (old checkpoints are still '
                'deleted only after the new one is written).', UserWarning)
        super().before_train(runner)
        if self.atomic and is_main_process() and osp.isdir(self.out_dir):
            for path in remove_stale_temporaries(self.out_dir):
                runner.logger.warning(
                    f'Removed {path}, left by a save that did not finish.')

    @contextlib.contextmanager
    def _removals_after_save(self) -> Iterator[_DeferredRemovals]:
        """Hold back the deletions the upstream code makes before a save."""
        backend = self.file_backend
        deferred = _DeferredRemovals(backend)
        self.file_backend = deferred
        try:
            yield deferred
        finally:
            self.file_backend = backend
        # Only reached when the save succeeded: never delete a file that
        # was (re)written in this save.
        keep = [self.last_ckpt, getattr(self, 'best_ckpt_path', None)]
        keep += list(getattr(self, 'best_ckpt_path_dict', {}).values())
        deferred.flush(keep)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the sha256 of every tensor of the checkpoint.

        Runs after the other hooks' ``before_save_checkpoint`` (this hook's
        priority is the lowest), so the digests cover what is written.

        Args:
            runner (Runner): The runner of the training process.
            checkpoint (dict): The checkpoint about to be written.
        """
        if self.tensor_digests and is_main_process():
            add_tensor_digests(checkpoint)

    def _refuse_nonfinite_model(self, runner, filename: str) -> None:
        """Raise before a save if the model's state is not finite.

        Args:
            runner (Runner): The runner of the training process.
            filename (str): The checkpoint that would be written.

        Raises:
            TrainingDivergedError: Some tensor holds NaN or inf.
        """
        bad, total = nonfinite_tensors(runner.model)
        if bad:
            raise TrainingDivergedError(
                f'Not saving {filename}: {len(bad)} of {total} '
                'floating-point tensors of the model hold NaN '
                f'or inf (e.g. {", ".join(bad[:5])}). '
                f'{last_checkpoint_text(runner)} {ADVICE}')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        """Save, update ``last_checkpoint``, then delete old checkpoints.

        Args:
            runner (Runner): The runner of the training process.
            step (int): Epoch or iteration of the checkpoint.
            meta (dict): Meta information saved in the checkpoint.

        Raises:
            TrainingDivergedError: The model holds NaN or inf; nothing is
                written or deleted.
        """
        self._refuse_nonfinite_model(runner, self.filename_tmpl.format(step))
        outdated = None
        # (``keep_ckpt_ids`` exists only with max_keep_ckpts > 0.) A step
        # saved twice (periodic and best) is kept once.
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            # The deque drops its oldest entry itself; remember it to delete
            # its file once the new checkpoint is complete.
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids[0]
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        # Sharded (model-parallel) saves involve every rank; the files are
        # managed by the main process only.
        if not is_main_process():
            return
        atomic_write_text(self.last_ckpt,
                          osp.join(runner.work_dir, 'last_checkpoint'))
        if outdated is not None:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """Save the best checkpoint, then delete the previous best one.

        Args:
            runner (Runner): The runner of the training process.
            metrics (dict): Evaluation results of all metrics.
        """
        if not self.save_best:
            return
        # A validation before training comes before this hook's turn.
        self.before_train(runner)
        self._refuse_nonfinite_model(runner, 'the best checkpoint')
        with self._removals_after_save():
            super()._save_best_checkpoint(runner, metrics)
