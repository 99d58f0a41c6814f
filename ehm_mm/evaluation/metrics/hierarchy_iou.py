# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""How well a patch hierarchy fits an object: best IoU of any tree node."""
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS


def best_node_iou(ancestors: torch.Tensor,
                  object_mask: torch.Tensor) -> torch.Tensor:
    """The best pixel IoU between any hierarchy node and an object mask.

    A node is the set of patches that share an ancestor id at one level; its
    pixels are the pixels of those patches. Every node of every level is a
    candidate, so the patches themselves (level 0) and the whole image (the
    root, when the hierarchy reaches it) are included.

    Args:
        ancestors (torch.Tensor): ``[L, h, w]`` integer ancestor ids per
            level and patch (ids in ``0 .. h * w - 1``).
        object_mask (torch.Tensor): ``[H, W]`` mask, nonzero = object, with
            ``H`` a multiple of ``h`` and ``W`` a multiple of ``w``.

    Returns:
        torch.Tensor: A float64 scalar in [0, 1]; 0 when the mask is empty.
    """
    if ancestors.dim() != 3:
        raise ValueError('ancestors must be [L, h, w], got shape '
                         f'{tuple(ancestors.shape)}')
    if object_mask.dim() != 2:
        raise ValueError('object mask must be [H, W], got shape '
                         f'{tuple(object_mask.shape)}')
    num_levels, h, w = ancestors.shape
    H, W = object_mask.shape
    if H % h or W % w:
        raise ValueError(
            f'object mask of size {H}x{W} is not a whole number of patches '
            f'of the {h}x{w} hierarchy grid')
    num_patches = h * w
    ids = ancestors.reshape(num_levels, num_patches).long().cpu()
    if ids.min() < 0 or ids.max() >= num_patches:
        raise ValueError(
            f'ancestor ids must lie in [0, {num_patches}), got range '
            f'[{int(ids.min())}, {int(ids.max())}]')
    obj = (object_mask != 0).double().cpu()
    # Object pixels inside each patch: [h * w].
    obj_per_patch = obj.reshape(h, H // h, w, W // w).sum(dim=(1, 3))
    obj_per_patch = obj_per_patch.reshape(num_patches)
    patch_area = float((H // h) * (W // w))
    # One bin per (level, node id).
    bins = (ids + torch.arange(num_levels)[:, None] * num_patches).flatten()
    size = torch.zeros(num_levels * num_patches, dtype=torch.float64)
    size.index_add_(0, bins, torch.ones_like(bins, dtype=torch.float64))
    inter = torch.zeros(num_levels * num_patches, dtype=torch.float64)
    inter.index_add_(0, bins, obj_per_patch.repeat(num_levels))
    union = size * patch_area + obj.sum() - inter
    iou = torch.where(size > 0, inter / union.clamp(min=1e-12),
                      torch.zeros_like(inter))
    return iou.max()


def _as_tensor(
        value: Union[torch.Tensor, np.ndarray, list]) -> torch.Tensor:
    """Turn a tensor, array or nested list into a tensor."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))


@METRICS.register_module()
class HierarchyIoU(BaseMetric):
    """Best IoU between any hierarchy node and the object mask, averaged.

    For every image the metric takes the best pixel IoU over all nodes of
    all levels of its patch hierarchy (see :func:`best_node_iou`) and
    reports the mean over images, in percent, as ``hierarchy/best_iou``. A
    hierarchy that groups the object's patches into one node scores high;
    one that mixes object and background everywhere scores low. Images whose
    mask is empty count as 0.

    The predictions must carry the hierarchy as ``[L, h, w]`` ancestor ids
    (``EHMMAE`` and ``EHMSimMIM`` in ``'predict'`` mode write
    ``hierarchy_ancestors``) and the ground truth as an ``[H, W]`` mask
    (``LoadObjectMask`` plus
    ``PackInputs(algorithm_keys=['gt_object_mask'])``).

    Two trees can be scored: ``hierarchy_ancestors``, the tree that made
    the masks, and ``teacher_hierarchy_ancestors``, the image's own tree
    from the model's affinity, which the model writes only when the two
    differ (block, noise or random-tree masks, shuffled attention). For the
    second, ``fallback_key='hierarchy_ancestors'`` scores the tree that made
    the masks when a model writes only that one (its masks are cut from the
    image's own tree, so both trees are the same); every sample of a run
    must then lack the field, a mix is refused.

    Args:
        ancestors_key (str): Field of the ancestors. Defaults to
            ``'hierarchy_ancestors'``.
        mask_key (str): Field of the object mask. Defaults to
            ``'gt_object_mask'``.
        fallback_key (str, optional): Field scored instead when a sample
            lacks ``ancestors_key``. Defaults to None (a missing field is
            an error).
        collect_device (str): Device to gather results across ranks.
            Defaults to ``'cpu'``.
        prefix (str, optional): Metric name prefix. Defaults to None, which
            means ``'hierarchy'``.
    """

    default_prefix: Optional[str] = 'hierarchy'

    def __init__(self,
                 ancestors_key: str = 'hierarchy_ancestors',
                 mask_key: str = 'gt_object_mask',
                 fallback_key: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ancestors_key = ancestors_key
        self.mask_key = mask_key
        self.fallback_key = fallback_key
        # Whether the samples seen so far carried ancestors_key (None: none
        # seen yet); a run must not mix the two trees.
        self._own_key_seen: Optional[bool] = None

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Score the hierarchy of each image of a batch.

        Args:
            data_batch (dict): The batch from the dataloader (unused).
            data_samples (Sequence[dict]): Predictions with the ancestors and
                the object mask.
        """
        for sample in data_samples:
            key = self.ancestors_key
            if key not in sample and self.fallback_key is not None:
                key = self.fallback_key
            self._check_same_tree(key == self.ancestors_key)
            for name in (key, self.mask_key):
                if name not in sample:
                    raise KeyError(
                        f'HierarchyIoU needs `{name}` in each data sample, '
                        f'found {sorted(sample)}')
            ancestors = _as_tensor(sample[key])
            mask = _as_tensor(sample[self.mask_key])
            self.results.append(float(best_node_iou(ancestors, mask)))

    def _check_same_tree(self, own_key: bool) -> None:
        """Refuse samples of one run that score different trees."""
        if self._own_key_seen is None:
            self._own_key_seen = own_key
        elif self._own_key_seen != own_key:
            raise ValueError(
                f'HierarchyIoU: some data samples carry '
                f'`{self.ancestors_key}` and others only '
                f'`{self.fallback_key}`; one run must score one tree')

    def compute_metrics(self, results: List[float]) -> dict:
        """Average the per-image scores.

        Args:
            results (list[float]): Best IoU per image.

        Returns:
            dict: ``{'best_iou': mean best IoU in percent}``.
        """
        if not results:
            raise ValueError('HierarchyIoU received no samples')
        self._own_key_seen = None  # the next evaluation starts afresh
        return dict(best_iou=100.0 * float(np.mean(results)))
