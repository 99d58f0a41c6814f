# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tell progress-driven pipeline transforms how far training has come."""
import inspect
from typing import Any, Iterator, List, Optional

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

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

    A batch is made before it is consumed, so the batch of iteration ``j``
    uses a progress in ``[(j - P) / max_iters, j / max_iters]`` with ``P =
    num_workers * prefetch_factor`` (the batches in flight); it is exact
    for the first batch after a (re)start and with ``num_workers=0``.
    Each DDP rank has its own dataloader and hook, so all ranks agree.

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

    def before_train(self, runner) -> None:
        """Find the transforms and write the starting progress.

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
