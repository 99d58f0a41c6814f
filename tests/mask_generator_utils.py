# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The pipeline mask generator run per image and batched, for comparison."""
from typing import List, Sequence, Tuple

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.registry import FUNCTIONS, DefaultScope


def single_and_batched(gen: dict,
                       imgs: Sequence[np.ndarray],
                       seed: int = 5) -> Tuple[List[dict], dict]:
    """Masks of the same images from both paths of the generator.

    Args:
        gen (dict): An ``EvolvedHierarchicalMaskGenerator`` config (without
            ``batched``), any ``depth_unit`` / ``boundary``.
        imgs (Sequence[np.ndarray]): ``[H, W, 3]`` uint8 images.
        seed (int): Global torch seed set before each path. Defaults to 5.

    Returns:
        Tuple[List[dict], dict]: The per-image pipeline outputs
        (``PackInputs`` with ``mask_depth`` and ``mask_node_size``) and
        the batch that ``evolved_mask_collate`` makes of the batched path's
        outputs.
    """
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        single = Compose([gen, dict(type='PackInputs',
                                    algorithm_keys=['mask_depth',
                                                    'mask_node_size'])])
        batched = Compose([dict(gen, batched=True),
                           dict(type='PackInputs',
                                algorithm_keys=['mask_request'])])
        collate = FUNCTIONS.get('evolved_mask_collate')
        torch.manual_seed(seed)
        expected = [single(dict(img=img)) for img in imgs]
        torch.manual_seed(seed)
        batch = collate([batched(dict(img=img)) for img in imgs])
    return expected, batch


def assert_same_masks(expected: List[dict], batch: dict) -> None:
    """Both paths agree on every image's mask, level and node size.

    Args:
        expected (List[dict]): The per-image outputs of
            :func:`single_and_batched`.
        batch (dict): Its collated batch.
    """
    samples = batch['data_samples']
    assert len(samples) == len(expected)
    for i, (sample, want) in enumerate(zip(samples, expected)):
        want = want['data_samples']
        assert 'mask_request' not in sample, i
        assert torch.equal(sample.mask, want.mask), i
        assert sample.mask_depth == want.mask_depth, i
        assert sample.mask_node_size == want.mask_node_size, i
