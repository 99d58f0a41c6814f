# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tell progress-driven pipeline transforms how far training has come."""
import inspect
import logging
from typing import Any, Iterator, List, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS
from torch.utils.data import BatchSampler

from ehm_mm.datasets.seeded_augment_sampler import SeededAugmentSampler
from ehm_mm.datasets.transforms import EvolvedHierarchicalMaskGenerator


def _walk(node: Any, seen: set) -> Iterator[Any]:
    """Yield every transform reachable from a dataset or transform."""
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _walk(item, seen)
        return
    yield node
    # datasets (BaseDataset.pipeline, wrappers' dataset / datasets) and
    # transform containers (Compose, RandomApply, RandomChoice, ...)
    for name in ('pipeline', 'dataset', 'datasets', 'transforms'):
        child = getattr(node, name, None)
        if child is not None and not inspect.ismethod(child):
            yield from _walk(child, seen)


def find_mask_generators(dataset: Any) -> List[
        EvolvedHierarchicalMaskGenerator]:
    """All :class:`EvolvedHierarchicalMaskGenerator` of a dataset's pipeline.

    Looks through dataset wrappers (``dataset`` / ``datasets``) and nested
    transform containers (``transforms``).

    Args:
        dataset (Any): A dataset.

    Returns:
        List[EvolvedHierarchicalMaskGenerator]: The transforms found.
    """
    return [
        node for node in _walk(dataset, set())
        if isinstance(node, EvolvedHierarchicalMaskGenerator)
    ]


@HOOKS.register_module()
class MaskProgressHook(Hook):
    """Write ``iter / max_iters`` into the pipeline's EHM mask generators.

    The transforms run in dataloader workers, which do not see the runner.
    Each :class:`~ehm_mm.datasets.transforms.EvolvedHierarchicalMaskGenerator`
    holds its progress in shared memory (created in the main process with
    the dataset, inherited or received by every worker), and this hook
    writes it:

    * ``before_train``: ``runner.iter / max_iters``, i.e. after a
      ``--resume`` the resumed iteration, before the first batch of the
      run is made (workers that started earlier wait for this value);
    * ``after_train_iter``: ``(iter + 1) / max_iters``, the progress of the
      next iteration.

    A batch is made before it is consumed, so with that value alone the
    batch of iteration ``j`` uses a progress in ``[(j - P) / max_iters, j /
    max_iters]`` with ``P = num_workers * prefetch_factor`` (the batches in
    flight); it is exact for the first batch after a (re)start and with
    ``num_workers=0``.

    **Exact progress.** When the train sampler is a
    :class:`~ehm_mm.datasets.SeededAugmentSampler` batched by a plain
    ``BatchSampler``, ``before_train`` also writes the loop's constants
    ``(len(train_dataloader), batch_size, max_iters)``; every sample then
    knows the iteration ``j = epoch * len(train_dataloader) + position //
    batch_size`` it is used in and gets exactly ``min(j / max_iters, 1)``,
    with any number of workers and after ``--resume`` (see
    :class:`~ehm_mm.datasets.SeededAugmentSampler`). Another batch sampler
    keeps the shared value (a warning says so). Each DDP rank has its own
    dataloader and hook, so all ranks agree.

    Args:
        required (bool): Raise in ``before_train`` when the train dataset
            has no such transform. Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, required: bool = True) -> None:
        self.required = required
        self._generators: Optional[List[
            EvolvedHierarchicalMaskGenerator]] = None

    def _set(self, runner, cur_iter: int) -> None:
        if self._generators is None:
            self._generators = find_mask_generators(
                runner.train_dataloader.dataset)
        max_iters = runner.max_iters
        progress = min(max(cur_iter / max_iters, 0.0), 1.0)
        for generator in self._generators:
            generator.set_progress(progress)

    @staticmethod
    def loop_constants(runner) -> Optional[Tuple[int, int, int]]:
        """``(iters_per_epoch, batch_size, max_iters)`` for exact progress.

        Args:
            runner (Runner): The runner.

        Returns:
            tuple[int, int, int], optional: The constants, None when the
            train sampler gives no positions (not a
            :class:`SeededAugmentSampler`) or they cannot be mapped to
            iterations (another batch sampler; a warning says so).
        """
        loader = runner.train_dataloader
        batch_sampler = getattr(loader, 'batch_sampler', None)
        sampler = getattr(batch_sampler, 'sampler',
                          getattr(loader, 'sampler', None))
        if not isinstance(sampler, SeededAugmentSampler):
            return None
        if type(batch_sampler) is not BatchSampler:
            print_log(
                'MaskProgressHook: the train dataloader batches with '
                f'{type(batch_sampler).__name__}, not a plain BatchSampler, '
                'so the iteration of a sample is not known from its '
                'position; the masks use the shared progress, which may lag '
                'by the batches in flight', logger='current',
                level=logging.WARNING)
            return None
        iters_per_epoch = len(loader)
        if isinstance(runner.train_loop, EpochBasedTrainLoop) and \
                runner.iter != runner.epoch * iters_per_epoch:
            print_log(
                f'MaskProgressHook: resuming at iteration {runner.iter} in '
                f'the middle of epoch {runner.epoch}: the epoch restarts '
                'from its first batch, whose masks get the progress of its '
                f'place in the epoch ({runner.epoch} x {iters_per_epoch} + '
                'batch), not of runner.iter', logger='current',
                level=logging.WARNING)
        return iters_per_epoch, batch_sampler.batch_size, runner.max_iters

    def before_train(self, runner) -> None:
        """Find the transforms, write the loop's constants and the
        starting progress.

        Args:
            runner (Runner): The runner.
        """
        self._generators = find_mask_generators(
            runner.train_dataloader.dataset)
        if not self._generators and self.required:
            raise RuntimeError(
                'MaskProgressHook: the train dataset has no '
                'EvolvedHierarchicalMaskGenerator in its pipeline; remove '
                'the hook or set required=False')
        constants = self.loop_constants(runner) if self._generators else None
        if constants is not None:
            # before the first progress: a worker waiting for it then finds
            # the constants too
            for generator in self._generators:
                generator.progress.set_loop(*constants)
        self._set(runner, runner.iter)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        """Write the progress of the next iteration.

        Args:
            runner (Runner): The runner.
            batch_idx (int): Index of the batch in the epoch.
            data_batch (Any): The batch. Defaults to None.
            outputs (dict, optional): The step's outputs. Defaults to None.
        """
        self._set(runner, runner.iter + 1)
