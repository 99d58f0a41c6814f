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
        key (tuple[int, ...]): Non-negative integers identifying the draw.
    """

    key: tuple

    def __new__(cls, index: int, key: Sequence[int]) -> 'SampleKey':
        obj = super().__new__(cls, index)
        obj.key = tuple(int(k) for k in key)
        return obj

    def __reduce__(self):
        return SampleKey, (int(self), self.key)

    def __repr__(self) -> str:
        return f'SampleKey({int(self)}, key={self.key})'


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
    docstring).

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
        for index in self.sampler:
            index = int(index)
            draw = draws.get(index, 0)
            draws[index] = draw + 1
            yield SampleKey(index,
                            (self.seed, self.epoch, self.rank, index, draw))

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
