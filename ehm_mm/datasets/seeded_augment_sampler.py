# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Data augmentation whose randomness is a function of the draw, not of time.

mmengine seeds each data-loader worker once (``seed + worker id``), so the
crop or flip an image gets depends on how many images that worker has
processed since it started. After ``--resume`` the workers start afresh and
the images differ from an uninterrupted run; the draws also depend on the
number of workers.

:class:`SeededAugmentSampler` wraps the usual sampler and hands out each
index together with a key ``(seed, epoch, rank, index, draw)`` (``draw``
counts earlier draws of the same index in this pass, 0 for an epoch-based
sampler). Before the dataset's pipeline processes a sample, Python's
``random``, numpy's global generator and torch's CPU generator are seeded
from that key, and restored afterwards. The augmentation of every sample is
thus the same in a straight run and in a resumed one, with any number of
workers, persistent or not.

Each index also carries its ``position`` in the pass (how many indices the
pass yielded before it). With the epoch of its key, the batch size and the
batches per epoch this gives the training iteration the sample is used in
(:meth:`SampleKey.iteration`), which progress-driven transforms use instead
of a progress read at the time the (prefetched) sample is made.
"""
import contextlib
import random
from typing import Any, Dict, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dataset import DefaultSampler  # noqa: F401  (registers it)
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.registry import DATA_SAMPLERS
from torch.utils.data import Sampler


class SampleKey(int):
    """A dataset index that carries the key of its draw.

    It is an ``int`` (every dataset indexes with it as usual); mmengine's
    ``BaseDataset.get_data_info`` stores it as ``sample_idx``, where
    :class:`SeededPipeline` finds it.

    Args:
        index (int): The dataset index.
        key (tuple[int, ...]): Non-negative integers identifying the draw;
            :class:`SeededAugmentSampler` gives ``(seed, epoch, rank, index,
            draw)``.
        position (int, optional): How many indices the sampler's pass
            yielded before this one. It is not part of ``key`` (the draws do
            not depend on it). None when unknown. Defaults to None.
    """

    key: tuple
    position: Optional[int]

    def __new__(cls,
                index: int,
                key: Sequence[int],
                position: Optional[int] = None) -> 'SampleKey':
        obj = super().__new__(cls, index)
        obj.key = tuple(int(k) for k in key)
        if position is not None:
            if isinstance(position, bool) or int(position) != position \
                    or position < 0:
                raise ValueError(
                    f'position must be an int >= 0 or None, got {position!r}')
            position = int(position)
        obj.position = position
        return obj

    def iteration(self, iters_per_epoch: int,
                  batch_size: int) -> Optional[int]:
        """The training iteration whose batch holds this sample.

        ``epoch * iters_per_epoch + position // batch_size`` with ``epoch``
        the second element of the key (:class:`SeededAugmentSampler`'s
        layout); valid when the indices are batched in order by a plain
        ``BatchSampler`` (see :class:`SeededAugmentSampler`).

        Args:
            iters_per_epoch (int): Batches per pass of the sampler
                (``len(dataloader)``).
            batch_size (int): Samples per batch (per rank).

        Returns:
            int, optional: The iteration, None without a position.
        """
        if self.position is None:
            return None
        if iters_per_epoch < 1 or batch_size < 1:
            raise ValueError(
                'iters_per_epoch and batch_size must be >= 1, got '
                f'{iters_per_epoch!r} and {batch_size!r}')
        return self.key[1] * iters_per_epoch + self.position // batch_size

    def __reduce__(self):
        return SampleKey, (int(self), self.key, self.position)

    def __repr__(self) -> str:
        return (f'SampleKey({int(self)}, key={self.key}, '
                f'position={self.position})')


@contextlib.contextmanager
def seeded_global_rngs(key: Sequence[int]) -> Iterator[None]:
    """Seed ``random``, ``numpy.random`` and torch (CPU) from ``key``.

    The previous states are restored when the block ends.

    Args:
        key (Sequence[int]): Non-negative integers.

    Yields:
        None
    """
    state = np.random.SeedSequence(list(key)).generate_state(4, np.uint64)
    saved = (random.getstate(), np.random.get_state(),
             torch.random.get_rng_state())
    random.seed(int(state[0]))
    np.random.seed(int(state[1]) % 2**32)
    torch.random.manual_seed(int(state[2]) % 2**63)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.random.set_rng_state(saved[2])


class SeededPipeline:
    """Run a pipeline under :func:`seeded_global_rngs` of the sample's key.

    Samples whose ``sample_idx`` is a plain ``int`` (a dataset indexed
    directly, e.g. by a visualization hook) run the pipeline unchanged.

    Args:
        pipeline (Callable): The dataset's pipeline (``Compose``).
    """

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, results: Dict[str, Any]) -> Any:
        key = results.get('sample_idx')
        if not isinstance(key, SampleKey):
            return self.pipeline(results)
        with seeded_global_rngs(key.key):
            return self.pipeline(results)

    def __getattr__(self, name: str) -> Any:
        # Keep ``dataset.pipeline.transforms`` etc. working. ``pipeline``
        # itself is looked up here only while unpickling (not yet set).
        if name == 'pipeline':
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self) -> str:
        return f'SeededPipeline({self.pipeline!r})'


@DATA_SAMPLERS.register_module()
class SeededAugmentSampler(Sampler):
    """A sampler wrapper that makes data augmentation resumable.

    It yields the indices of the wrapped sampler as :class:`SampleKey`
    objects keyed by ``(seed, epoch, rank, index, draw)`` and wraps the
    dataset's pipeline in :class:`SeededPipeline`, which seeds the global
    random generators from that key for each sample (see the module
    docstring). Each key also carries its ``position`` in the pass, from
    which :class:`~ehm_mm.engine.hooks.MaskProgressHook` and the EHM mask
    generator know the exact training iteration of a sample: ``epoch *
    len(dataloader) + position // batch_size``. That holds for mmengine's
    ``EpochBasedTrainLoop`` (``set_epoch`` before each epoch, an epoch
    restarted on resume) and ``IterBasedTrainLoop`` (one pass of
    ``InfiniteSampler`` in epoch 0, or ``set_epoch(k)`` before pass ``k``
    of a finite sampler; on resume it consumes the batches already
    trained), per rank, with the default ``BatchSampler``.

    Example::

        train_dataloader = dict(
            sampler=dict(
                type='SeededAugmentSampler',
                sampler=dict(type='DefaultSampler', shuffle=True)),
            ...)

    Args:
        dataset (BaseDataset): The dataset; it must have a ``pipeline``
            called by ``prepare_data`` with ``get_data_info``'s result (every
            mmengine ``BaseDataset``). Dataset wrappers (``ConcatDataset``,
            ``RepeatDataset``, ...) are refused: they pass plain indices on.
        sampler (dict | Sampler): The wrapped sampler or its config; built
            with ``dataset`` and ``seed``. Defaults to
            ``dict(type='DefaultSampler', shuffle=True)``.
        seed (int, optional): Seed of the keys when the wrapped sampler has
            no ``seed`` attribute; None draws one shared by all ranks
            (``sync_random_seed``). Defaults to None.
    """

    def __init__(self,
                 dataset,
                 sampler: Union[dict, Sampler] = dict(
                     type='DefaultSampler', shuffle=True),
                 seed: Optional[int] = None) -> None:
        if isinstance(sampler, dict):
            sampler = DATA_SAMPLERS.build(
                sampler, default_args=dict(dataset=dataset, seed=seed))
        if isinstance(sampler, SeededAugmentSampler):
            raise TypeError('SeededAugmentSampler cannot wrap itself')
        self.sampler = sampler
        seed = getattr(sampler, 'seed', seed)
        self.seed = sync_random_seed() if seed is None else int(seed)
        if self.seed < 0:
            raise ValueError(f'seed must be >= 0, got {self.seed}')
        self.rank, _ = get_dist_info()
        self.epoch = 0
        pipeline = getattr(dataset, 'pipeline', None)
        if not callable(pipeline):
            raise TypeError(
                'SeededAugmentSampler needs a dataset with a `pipeline` '
                '(an mmengine BaseDataset); got '
                f'{type(dataset).__name__}. Dataset wrappers pass plain '
                'indices to their datasets and are not supported.')
        if not isinstance(pipeline, SeededPipeline):
            dataset.pipeline = SeededPipeline(pipeline)

    def __iter__(self) -> Iterator[SampleKey]:
        draws: Dict[int, int] = {}
        # the epoch of the whole pass (the wrapped sampler fixed its order
        # with it), even if set_epoch is called while the pass runs
        epoch = self.epoch
        for position, index in enumerate(self.sampler):
            index = int(index)
            draw = draws.get(index, 0)
            draws[index] = draw + 1
            yield SampleKey(index, (self.seed, epoch, self.rank, index, draw),
                            position)

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the keys and of the wrapped sampler.

        Args:
            epoch (int): The epoch.
        """
        self.epoch = int(epoch)
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)
