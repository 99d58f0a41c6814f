# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Augmentation randomness keyed by the draw: same with any worker count."""
import copy
import pickle
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset, ConcatDataset
from mmengine.registry import TRANSFORMS
from torch.utils.data import DataLoader

import ehm_mm  # noqa: F401
from ehm_mm.datasets.seeded_augment_sampler import (
    SampleKey,
    SeededAugmentSampler,
    SeededPipeline,
    seeded_global_rngs,
)


@TRANSFORMS.register_module(force=True)
class _DrawFromEveryRNG:
    """A stand-in for crops and flips: draws from all three global RNGs."""

    def __call__(self, results):
        results['draws'] = (random.random(), float(np.random.rand()),
                            float(torch.rand(1)))
        return results


class _Toy(BaseDataset):

    def load_data_list(self):
        return [dict(value=i) for i in range(12)]


def _as_list(batch: list) -> list:
    return batch


def _toy() -> _Toy:
    return _Toy(pipeline=[dict(type='_DrawFromEveryRNG')])


def _epochs(num_workers: int, persistent: bool, epochs=(0, 1, 2)) -> list:
    dataset = _toy()
    sampler = SeededAugmentSampler(
        dataset, sampler=dict(type='DefaultSampler', shuffle=True), seed=3)
    loader = DataLoader(
        dataset,
        batch_size=4,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=persistent,
        collate_fn=_as_list)
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out.append([(s['value'], s['draws']) for batch in loader
                    for s in batch])
    return out


def test_sample_key_is_an_int_that_keeps_its_key():
    key = SampleKey(5, (1, 2, 0, 5, 0))
    assert key == 5 and [10, 11, 12, 13, 14, 15][key] == 15
    for copied in (pickle.loads(pickle.dumps(key)), copy.deepcopy(key)):
        assert isinstance(copied, SampleKey)
        assert copied == 5 and copied.key == (1, 2, 0, 5, 0)


def test_sample_key_keeps_its_position_out_of_the_key():
    key = SampleKey(5, (1, 2, 0, 5, 0), position=7)
    assert key.key == (1, 2, 0, 5, 0) and key.position == 7
    for copied in (pickle.loads(pickle.dumps(key)), copy.deepcopy(key)):
        assert isinstance(copied, SampleKey) and copied == 5
        assert copied.key == (1, 2, 0, 5, 0) and copied.position == 7
    assert SampleKey(5, (1, 2, 0, 5, 0)).position is None
    # epoch 2 x 4 batches per epoch + 7 // 3
    assert key.iteration(iters_per_epoch=4, batch_size=3) == 10
    assert SampleKey(5, (1, 2, 0, 5, 0)).iteration(4, 3) is None
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='position must be'):
            SampleKey(5, (1, 2, 0, 5, 0), position=bad)
    with pytest.raises(ValueError, match='iters_per_epoch and batch_size'):
        key.iteration(0, 3)


def test_positions_count_the_pass_and_keys_stay_as_before():
    dataset = _toy()
    sampler = SeededAugmentSampler(
        dataset, sampler=dict(type='DefaultSampler', shuffle=True), seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(iter(sampler.sampler))
        keys = list(sampler)
        assert [k.position for k in keys] == list(range(12))
        # the key is (seed, epoch, rank, index, draw), as before positions
        assert [k.key for k in keys] == [(3, epoch, 0, i, 0) for i in order]
    # the epoch of a pass is the one it started with
    stream = iter(sampler)
    first = next(stream)
    sampler.set_epoch(5)
    assert {k.key[1] for k in [first, *stream]} == {1}
    infinite = iter(SeededAugmentSampler(
        dataset, sampler=dict(type='InfiniteSampler', shuffle=True), seed=0))
    assert [next(infinite).position for _ in range(30)] == list(range(30))


def test_seeding_restores_the_global_generators():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    with seeded_global_rngs((0, 0, 0, 7, 0)):
        inside = (random.random(), np.random.rand(), torch.rand(1))
    after = (random.random(), np.random.rand(), torch.rand(1))
    assert after[:2] == expected[:2] and torch.equal(after[2], expected[2])
    with seeded_global_rngs((0, 0, 0, 7, 0)):
        again = (random.random(), np.random.rand(), torch.rand(1))
    assert inside[:2] == again[:2] and torch.equal(inside[2], again[2])


def test_draws_do_not_depend_on_workers_or_resume():
    reference = _epochs(num_workers=0, persistent=False)
    # Any number of workers, persistent or not.
    assert _epochs(num_workers=2, persistent=True) == reference
    assert _epochs(num_workers=3, persistent=False) == reference
    # A resumed run starts fresh workers at epoch 2: same draws.
    assert _epochs(num_workers=2, persistent=True,
                   epochs=(2, ))[0] == reference[2]
    # The draws are random: they differ between samples and epochs.
    by_value = [dict(epoch) for epoch in reference]
    assert len({d for d in by_value[0].values()}) == 12
    assert by_value[0][0] != by_value[1][0]


def test_infinite_sampler_repeats_get_new_draws():
    dataset = _toy()
    sampler = SeededAugmentSampler(
        dataset, sampler=dict(type='InfiniteSampler', shuffle=True), seed=0)
    stream = iter(sampler)
    keys = [next(stream) for _ in range(36)]
    assert sorted(int(k) for k in keys) == sorted(list(range(12)) * 3)
    assert len({k.key for k in keys}) == 36
    assert {k.key[-1] for k in keys} == {0, 1, 2}


def test_plain_indices_run_the_pipeline_unseeded():
    dataset = _toy()
    SeededAugmentSampler(dataset, seed=0)
    assert isinstance(dataset.pipeline, SeededPipeline)
    assert len(dataset.pipeline.transforms) == 1
    np.random.seed(0)
    first = dataset[3]['draws']
    second = dataset[3]['draws']
    assert first != second


def test_dataset_wrappers_are_refused():
    concat = ConcatDataset([_toy(), _toy()])
    with pytest.raises(TypeError, match='Dataset wrappers'):
        SeededAugmentSampler(concat, seed=0)
