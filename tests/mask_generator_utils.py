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
            ``batched``).
        imgs (Sequence[np.ndarray]): ``[H, W, 3]`` uint8 images.
        seed (int): Global torch seed set before each path. Defaults to 5.

    Returns:
        Tuple[List[dict], dict]: The per-image pipeline outputs
        (``PackInputs`` with ``mask_depth``) and the batch that
        ``evolved_mask_collate`` makes of the batched path's outputs.
    """
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        single = Compose([gen, dict(type='PackInputs',
                                    algorithm_keys=['mask_depth'])])
        batched = Compose([dict(gen, batched=True),
                           dict(type='PackInputs',
                                algorithm_keys=['mask_request'])])
        collate = FUNCTIONS.get('evolved_mask_collate')
        torch.manual_seed(seed)
        expected = [single(dict(img=img)) for img in imgs]
        torch.manual_seed(seed)
        batch = collate([batched(dict(img=img)) for img in imgs])
    return expected, batch
