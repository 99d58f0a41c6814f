# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The pipeline EHM mask generator: conventions, cues, depth, progress."""
import numpy as np
import pytest
import torch
from mask_generator_utils import single_and_batched
from mmengine.registry import FUNCTIONS
from mmpretrain.registry import TRANSFORMS
from mmpretrain.structures import DataSample
from torch.utils.data import DataLoader, Dataset

import ehm_mm  # noqa: F401
from ehm_mm.datasets.seeded_augment_sampler import SampleKey
from ehm_mm.datasets.transforms import (
    EvolvedHierarchicalMaskGenerator,
    SharedProgress,
    cue_affinity,
    patch_cues,
)


def halves_image(size: int = 32, texture: bool = False) -> np.ndarray:
    """Left half one appearance, right half another."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    if texture:  # same mean colour, stripes on the right
        img[:] = 128
        img[:, size // 2:, :] = np.where(
            (np.arange(size // 2) % 2)[None, :, None] == 0, 28, 228)
    else:
        img[:, :size // 2] = (200, 30, 30)
        img[:, size // 2:] = (30, 30, 200)
    return img


def build(**kwargs) -> EvolvedHierarchicalMaskGenerator:
    cfg = dict(
        type='EvolvedHierarchicalMaskGenerator', input_size=32,
        mask_patch_size=8, model_patch_size=2, mask_ratio=0.5, d_max=3.0)
    cfg.update(kwargs)
    return TRANSFORMS.build(cfg)


def test_simmim_conventions_and_exact_count():
    gen = build(progress=0.5)
    rng = np.random.default_rng(0)
    for _ in range(10):
        img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        out = gen(dict(img=img))
        mask = out['mask']
        assert mask.shape == (16, 16) and mask.dtype == np.int64
        assert set(np.unique(mask)) <= {0, 1}
        # each 8 px mask patch is a 4 x 4 block of 2 px tokens
        blocks = mask.reshape(4, 4, 4, 4)
        assert (blocks == blocks[:, :1, :, :1]).all()
        assert blocks[:, 0, :, 0].sum() == 8  # round(0.5 * 16)
        assert out['mask_depth'] in (1, 2) and out['mask_progress'] == 0.5


def test_same_output_as_simmim_generator_shape():
    ours = TRANSFORMS.build(
        dict(type='EvolvedHierarchicalMaskGenerator', progress=0.0))
    theirs = TRANSFORMS.build(dict(type='SimMIMMaskGenerator'))
    img = np.zeros((192, 192, 3), dtype=np.uint8)
    a, b = ours(dict(img=img))['mask'], theirs(dict(img=img))['mask']
    assert a.shape == b.shape == (48, 48) and a.dtype == b.dtype
    assert a.sum() == b.sum() == 22 * 64  # ceil(0.6 * 36) == round(...)


def test_num_masking_patches_is_exact():
    gen = build(num_masking_patches=5, progress=1.0)
    out = gen(dict(img=halves_image()))
    assert out['mask'][::4, ::4].sum() == 5 and out['mask_depth'] == 3


@pytest.mark.parametrize('texture', [False, True], ids=['colour', 'texture'])
def test_deep_masks_follow_the_image_regions(texture):
    # 4 x 4 mask grid, two uniform halves of 8 mask patches: at depth 3 the
    # nodes are the halves, so masking 8 patches masks exactly one half.
    gen = build(model_patch_size=8, d_min=3.0, d_max=3.0, progress=0.0)
    torch.manual_seed(0)
    halves = set()
    for _ in range(6):
        out = gen(dict(img=halves_image(texture=texture)))
        mask = out['mask']
        assert out['mask_depth'] == 3
        left, right = mask[:, :2], mask[:, 2:]
        assert (left.all() and not right.any()) or (right.all()
                                                   and not left.any())
        halves.add(int(left.all()))
    assert halves == {0, 1}  # both halves get masked across draws


def test_depth_zero_is_random_masking():
    gen = build(model_patch_size=8, d_max=0.0, schedule='constant',
                progress=0.7)
    torch.manual_seed(0)
    out = gen(dict(img=halves_image()))
    assert out['mask_depth'] == 0
    # the same draw as mask_nodes on singleton nodes: argsort of the noise
    torch.manual_seed(0)
    noise = torch.rand(1, 16)
    keep = torch.argsort(noise, dim=1)[0, :8]
    expected = np.ones(16, dtype=np.int64)
    expected[keep.numpy()] = 0
    assert np.array_equal(out['mask'].reshape(-1), expected)


def test_depth_follows_progress():
    gen = build(model_patch_size=8, d_min=0.0, d_max=2.0)
    img = halves_image()
    depths = {}
    for progress in (0.0, 0.5, 1.0):
        gen.set_progress(progress)
        depths[progress] = {gen(dict(img=img))['mask_depth']
                            for _ in range(20)}
    assert depths[0.0] == {0} and depths[0.5] == {1} and depths[1.0] == {2}
    gen.set_progress(0.25)  # d = 0.5: stochastic rounding draws 0 and 1
    assert {gen(dict(img=img))['mask_depth'] for _ in range(40)} == {0, 1}


def test_cues_and_affinity():
    img = halves_image(texture=True)
    cues = patch_cues(img, 8)
    assert cues.shape == (16, 5)
    left, right = cues.view(4, 4, 5)[:, :2], cues.view(4, 4, 5)[:, 2:]
    assert torch.allclose(left[..., :3], right[..., :3], atol=1e-6)
    assert (left[..., 3:] == 0).all() and (right[..., 3] > 0.5).all()
    assert (right[..., 4] == 0).all()  # vertical stripes: no dy
    affinity = cue_affinity(cues)
    assert torch.allclose(affinity, affinity.T)
    assert (affinity.diagonal() == 0).all() and (affinity <= 0).all()
    assert torch.equal(cue_affinity(cues, texture_weight=0.0),
                       torch.zeros(16, 16))


@pytest.mark.parametrize('kwargs, match', [
    (dict(input_size=30), 'input_size'),
    (dict(model_patch_size=3), 'multiple of model_patch_size'),
    (dict(mask_ratio=1.0), 'mask_ratio'),
    (dict(num_masking_patches=16), 'masked count'),
    (dict(d_max=5.0), 'beyond the height 4'),
    (dict(hierarchy_cfg=dict(max_levels=2)), 'max_levels'),
    (dict(hierarchy_cfg=dict(rounds=0)), 'rounds'),
    (dict(progress=1.5), 'progress'),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_bad_image_and_missing_progress_are_named():
    with pytest.raises(ValueError, match='after the crop'):
        build(progress=0.0)(dict(img=np.zeros((24, 32, 3), np.uint8)))
    with pytest.raises(RuntimeError, match='MaskProgressHook'):
        build()(dict(img=halves_image()))


class _Images(Dataset):

    def __init__(self, gen: EvolvedHierarchicalMaskGenerator) -> None:
        self.gen = gen

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> float:
        return self.gen(dict(img=halves_image()))['mask_progress']


def test_persistent_workers_see_progress_set_later():
    gen = build(model_patch_size=8, progress_timeout=60)
    assert gen.progress.is_shared
    loader = DataLoader(
        _Images(gen), batch_size=4, num_workers=2, persistent_workers=True,
        multiprocessing_context='fork')
    it = iter(loader)  # the workers start before any progress is set
    gen.set_progress(0.25)  # they wait for it
    seen = [{float(v) for batch in it for v in batch}]
    gen.set_progress(0.75)  # as the hook does after the last iteration
    seen.append({float(v) for batch in loader for v in batch})
    assert seen == [{0.25}, {0.75}]


def test_shared_progress_unset_and_set():
    progress = SharedProgress()
    assert progress.get() is None
    progress.set(0.5)
    assert progress.get() == 0.5
    with pytest.raises(ValueError, match='progress'):
        progress.set(-0.1)


def test_samples_with_a_position_get_their_iterations_progress():
    progress = SharedProgress()
    assert progress.loop() is None
    for bad in (0, -2, 1.0, True):
        with pytest.raises(ValueError, match='batch_size must be an int'):
            progress.set_loop(4, bad, 8)
    # sample 5 of epoch 1, position 5 in its pass: iteration 1 x 4 + 5 // 2
    key = SampleKey(3, (0, 1, 0, 3, 0), position=5)
    assert progress.progress_at(key) is None  # constants not set
    progress.set_loop(iters_per_epoch=4, batch_size=2, max_iters=8)
    assert progress.loop() == (4, 2, 8) and progress.is_shared
    progress._loop[1] = 0  # as read while being written: not set
    assert progress.loop() is None and progress.progress_at(key) is None
    progress.set_loop(iters_per_epoch=4, batch_size=2, max_iters=8)
    assert progress.progress_at(key) == 6 / 8
    assert progress.progress_at(3) is None  # a plain index
    assert progress.progress_at(SampleKey(3, (0, 1, 0, 3, 0))) is None
    # past max_iters (an epoch loop's restarted epoch): capped at 1
    assert progress.progress_at(SampleKey(3, (0, 3, 0, 3, 0), 7)) == 1.0
    for batched in (False, True):
        # the fixed progress is what samples without a position get
        gen = build(progress=0.25, batched=batched)
        out = gen(dict(img=halves_image(), sample_idx=key))
        assert (out['mask_progress'], out['mask_progress_source']) == (
            0.25, 'shared')
        gen.progress.set_loop(4, 2, 8)
        out = gen(dict(img=halves_image(), sample_idx=key))
        assert (out['mask_progress'], out['mask_progress_source']) == (
            0.75, 'iteration')
        out = gen(dict(img=halves_image(), sample_idx=3))
        assert (out['mask_progress'], out['mask_progress_source']) == (
            0.25, 'shared')
    # without any progress set the constants alone suffice
    gen = build()
    gen.progress.set_loop(4, 2, 8)
    assert gen(dict(img=halves_image(),
                    sample_idx=key))['mask_progress'] == 0.75
    with pytest.raises(RuntimeError, match='MaskProgressHook'):
        gen(dict(img=halves_image(), sample_idx=3))


def test_batched_masks_equal_the_unbatched_ones():
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            for _ in range(6)]
    imgs[0] = halves_image()
    gen = dict(type='EvolvedHierarchicalMaskGenerator', input_size=32,
               mask_patch_size=8, model_patch_size=4, mask_ratio=0.5,
               d_max=3.0, progress=0.5)  # d = 1.5: depths 1 and 2
    expected, batch = single_and_batched(gen, imgs)
    samples = batch['data_samples']
    assert {int(s.mask_depth) for s in samples} == {1, 2}
    for sample, want in zip(samples, expected):
        assert 'mask_request' not in sample
        assert torch.equal(sample.mask, want['data_samples'].mask)
        assert sample.mask_depth == want['data_samples'].mask_depth
    assert batch['inputs'][0].shape == (3, 32, 32)


def test_batched_collate_names_what_is_missing():
    collate = FUNCTIONS.get('evolved_mask_collate')
    with pytest.raises(ValueError, match="algorithm_keys=\\['mask_request'"):
        collate([dict(inputs=torch.zeros(3, 4, 4),
                      data_samples=DataSample())])
