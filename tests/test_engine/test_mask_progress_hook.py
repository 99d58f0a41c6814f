# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""MaskProgressHook: the depth a worker uses follows the runner, resume too.

A recording model stores, for every training iteration, the progress each
sample's mask was made with (``mask_progress``, packed by ``PackInputs``)
and the mask. The data come from 2 persistent workers of an
``IterBasedTrainLoop``, which starts its workers before any hook runs, or
of an ``EpochBasedTrainLoop``. With a plain sampler the progress lags by at
most the batches in flight; with ``SeededAugmentSampler`` it is exact and
a resumed run makes the same masks as a straight one.
"""
import logging.handlers
import uuid
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import ConcatDataset
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import MODELS
from runner_utils import restoring_mmengine_globals
from torch.utils.data import BatchSampler, DataLoader

import ehm_mm  # noqa: F401
from ehm_mm.datasets import SeededAugmentSampler
from ehm_mm.engine.hooks import MaskProgressHook, find_mask_generators

MAX_ITERS = 8
NUM_WORKERS = 2
IN_FLIGHT = NUM_WORKERS * 2  # prefetch_factor 2


@MODELS.register_module(force=True)
class ProgressRecorder(BaseModel):
    """Records ``(iter, [mask_progress of each sample])`` per step."""

    def forward(self, inputs, data_samples=None, mode='tensor'):
        cur_iter = MessageHub.get_current_instance().get_info('iter')
        self.records.append(
            (cur_iter, [s.mask_progress for s in data_samples]))
        self.sources.append([s.mask_progress_source for s in data_samples])
        self.masks.append(
            torch.stack([torch.as_tensor(s.mask) for s in data_samples]))
        return dict(loss=(self.weight - 1).square().sum())

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.records, self.sources, self.masks = [], [], []


def pipeline(**generator):
    return [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(32, 32)),
        dict(type='RandomFlip', prob=0.5),
        dict(
            type='EvolvedHierarchicalMaskGenerator', input_size=32,
            mask_patch_size=8, model_patch_size=8, mask_ratio=0.5,
            d_max=2.0, **generator),
        dict(
            type='PackInputs',
            algorithm_keys=['mask_progress', 'mask_progress_source',
                            'mask']),
    ]


def make_cfg(image_folder: str,
             work_dir: str,
             seeded: bool = False,
             by_epoch: bool = False,
             finite: bool = False,
             **kwargs) -> Config:
    """``finite``: an iteration-based loop over a ``DefaultSampler``
    (mmengine restarts it with ``set_epoch(pass)`` after each pass)."""
    sampler = dict(
        type='DefaultSampler' if by_epoch or finite else 'InfiniteSampler',
        shuffle=seeded)
    if seeded:
        sampler = dict(type='SeededAugmentSampler', sampler=sampler)
    if by_epoch:  # 8 images, 4 batches per epoch
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2)
    else:
        train_cfg = dict(type='IterBasedTrainLoop', max_iters=MAX_ITERS)
    return Config(
        dict(
            model=dict(type='ProgressRecorder'),
            work_dir=work_dir,
            experiment_name=f'progress_{uuid.uuid4().hex[:8]}',
            default_scope='mmpretrain',
            train_dataloader=dict(
                batch_size=2,
                num_workers=NUM_WORKERS,
                persistent_workers=True,
                sampler=sampler,
                collate_fn=dict(type='default_collate'),
                dataset=dict(
                    type='CustomDataset', data_root=image_folder,
                    with_label=False, pipeline=pipeline())),
            train_cfg=train_cfg,
            optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
            custom_hooks=[dict(type='MaskProgressHook')],
            default_hooks=dict(
                checkpoint=dict(
                    type='CheckpointHook', interval=1 if by_epoch else 4,
                    by_epoch=by_epoch),
                logger=dict(type='LoggerHook', interval=1)),
            log_processor=dict(by_epoch=by_epoch),
            randomness=dict(seed=0),
            **kwargs))


def train(cfg: Config) -> Runner:
    """Train, then drop the mmengine globals the runner made current."""
    with restoring_mmengine_globals():
        runner = Runner.from_cfg(cfg)
        runner.train()
        # stop the persistent workers now, not at some later collection
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):
            loop.dataloader_iterator._iterator._shutdown_workers()
        elif loop.dataloader._iterator is not None:
            loop.dataloader._iterator._shutdown_workers()
    return runner


def check_records(records, first_iter):
    iters = [cur_iter for cur_iter, _ in records]
    assert iters == list(range(first_iter, MAX_ITERS))
    # the first batch of a (re)started run: exactly the runner's progress
    assert set(records[0][1]) == {first_iter / MAX_ITERS}
    for cur_iter, progress in records:
        for value in progress:
            # made at most IN_FLIGHT batches ahead, never from the future,
            # never from before the (re)start
            assert max(first_iter, cur_iter - IN_FLIGHT) / MAX_ITERS \
                <= value <= cur_iter / MAX_ITERS


def test_progress_reaches_persistent_workers_and_survives_resume(
        image_folder, tmp_path):
    work_dir = str(tmp_path / 'work')
    straight = train(make_cfg(image_folder, work_dir))
    check_records(straight.model.records, 0)
    # the progress moves during the run (not stuck at the start)
    assert straight.model.records[-1][1][0] > 0

    resumed = train(
        make_cfg(image_folder, work_dir, resume=True,
                 load_from=f'{work_dir}/iter_4.pth'))
    check_records(resumed.model.records, 4)


@pytest.mark.parametrize('by_epoch, finite', [(False, False),
                                              (False, True), (True, True)],
                         ids=['iter-infinite', 'iter-default', 'epoch'])
def test_seeded_sampler_gives_exact_progress_and_bit_exact_resume(
        image_folder, tmp_path, by_epoch, finite):
    work_dir = str(tmp_path / 'work')
    straight = train(make_cfg(image_folder, work_dir, True, by_epoch,
                              finite))
    resumed = train(
        make_cfg(image_folder, work_dir, True, by_epoch, finite, resume=True,
                 load_from=f'{work_dir}/' +
                 ('epoch_1.pth' if by_epoch else 'iter_4.pth')))
    for runner, first_iter in ((straight, 0), (resumed, 4)):
        records = runner.model.records
        assert [cur_iter for cur_iter, _ in records] == list(
            range(first_iter, MAX_ITERS))
        # every sample: exactly the progress of the iteration it is used in
        for cur_iter, progress in records:
            assert progress == [cur_iter / MAX_ITERS] * 2
        assert {s for b in runner.model.sources for s in b} == {'iteration'}
    # 4 straight iterations + --resume + 4 == 8 straight ones: same masks
    masks = straight.model.masks
    assert len({m.numpy().tobytes() for m in masks}) == MAX_ITERS
    for made, again in zip(masks[4:], resumed.model.masks, strict=True):
        assert torch.equal(made, again)


def test_hook_finds_generators_in_wrapped_datasets(image_folder):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        datasets = [
            CustomDataset(data_root=image_folder, with_label=False,
                          pipeline=pipeline()),
            CustomDataset(data_root=image_folder, with_label=False,
                          pipeline=[dict(type='RandomApply',
                                         transforms=pipeline()[3:4])])
        ]
    found = find_mask_generators(ConcatDataset(datasets))
    assert len(found) == 2
    runner = SimpleNamespace(
        train_dataloader=SimpleNamespace(dataset=ConcatDataset(datasets)),
        iter=3, max_iters=12)
    hook = MaskProgressHook()
    hook.before_train(runner)
    assert [g.progress.get() for g in hook._generators] == [0.25, 0.25]
    hook.after_train_iter(runner, batch_idx=3)
    assert [g.progress.get() for g in hook._generators] == [1 / 3, 1 / 3]


def test_loop_constants_need_the_seeded_sampler_and_a_plain_batcher(
        image_folder):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = CustomDataset(data_root=image_folder, with_label=False,
                                pipeline=pipeline())
    seeded = SeededAugmentSampler(dataset, seed=0)

    def runner(loader):
        return SimpleNamespace(train_dataloader=loader, train_loop=None,
                               iter=0, epoch=0, max_iters=12)

    hook = MaskProgressHook()
    loader = DataLoader(dataset, batch_size=3, sampler=seeded)
    assert hook.loop_constants(runner(loader)) == (3, 3, 12)
    hook.before_train(runner(loader))
    assert hook._generators[0].progress.loop() == (3, 3, 12)
    plain = DataLoader(dataset, batch_size=3)
    assert hook.loop_constants(runner(plain)) is None

    class OtherBatcher(BatchSampler):
        pass

    other = DataLoader(
        dataset, batch_sampler=OtherBatcher(seeded, 3, drop_last=False))
    logger = MMLogger.get_current_instance()
    warnings = logging.handlers.BufferingHandler(10)
    logger.addHandler(warnings)
    try:
        assert hook.loop_constants(runner(other)) is None
    finally:
        logger.removeHandler(warnings)
    assert [r.levelno for r in warnings.buffer] == [logging.WARNING]
    assert 'batches with OtherBatcher' in warnings.buffer[0].getMessage()


def test_hook_without_generator_is_an_error(image_folder):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = CustomDataset(data_root=image_folder, with_label=False,
                                pipeline=[dict(type='LoadImageFromFile')])
    runner = SimpleNamespace(
        train_dataloader=SimpleNamespace(dataset=dataset), iter=0,
        max_iters=4)
    with pytest.raises(RuntimeError, match='no EvolvedHierarchicalMask'):
        MaskProgressHook().before_train(runner)
    MaskProgressHook(required=False).before_train(runner)
