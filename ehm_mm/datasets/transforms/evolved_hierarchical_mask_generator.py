# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHM masks made in the data pipeline, from the image's own patch cues.

Dataloader workers do not have the model being trained, so this transform
builds the hierarchy from low-level cues of the image itself (the "low-level
cues first" end of EHM): per mask patch, its mean colour and a texture
statistic; the affinity of two patches is minus the squared distance of
their cue vectors. The tree builder, the depth schedule and the node masking
are the ones the model-side ``EvolvedHierarchicalMasking`` uses.

The depth follows training progress. The progress lives in a one-element
tensor in shared memory (:class:`SharedProgress`), created with the
transform in the main process, so every dataloader worker sees the same
storage whether workers are forked or spawned, persistent or not.
:class:`~ehm_mm.engine.hooks.MaskProgressHook` writes it from the runner.
Workers prefetch, so that value may lag the iteration a sample is used in;
samples drawn by :class:`~ehm_mm.datasets.SeededAugmentSampler` carry their
position instead, and with the loop's constants (also shared, written once
by the hook) the transform computes the exact ``iteration / max_iters``.
"""
import math
import time
from dataclasses import dataclass
from numbers import Integral
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.dataset import default_collate
from mmengine.registry import FUNCTIONS
from mmpretrain.registry import TRANSFORMS
from torch import Tensor
from torch.utils.data import get_worker_info

from ehm_mm.models.masking import (  # noqa: F401  (cues re-exported)
    Hierarchy,
    MaskSpec,
    build_hierarchy,
    cue_affinity,
    cut_masks,
    patch_cues,
    stochastic_round,
)

_UNSET = -1.0


class SharedProgress:
    """Training progress ``t`` in ``[0, 1]`` shared with dataloader workers.

    One float64 in shared memory: the main process writes it, every worker
    reads the same storage (forked workers inherit the mapping; spawned
    workers receive a handle to it when the dataset is pickled). A negative
    value means "not set yet". Next to it, also shared, the training loop's
    constants (:meth:`set_loop`), from which the exact progress of a sample
    that knows its position in the sampler's pass is computed
    (:meth:`progress_at`).

    Args:
        progress (float, optional): Initial progress; None leaves it unset.
            Defaults to None.
    """

    def __init__(self, progress: Optional[float] = None) -> None:
        self._value = torch.full((1, ), _UNSET, dtype=torch.float64)
        self._value.share_memory_()
        # (iters_per_epoch, batch_size, max_iters); zeros: not set
        self._loop = torch.zeros(3, dtype=torch.int64)
        self._loop.share_memory_()
        if progress is not None:
            self.set(progress)

    @staticmethod
    def check(progress: float) -> float:
        """Validate a progress value.

        Args:
            progress (float): Must be a number in ``[0, 1]``.

        Returns:
            float: The value as a Python float.
        """
        if (isinstance(progress, bool)
                or not isinstance(progress, (int, float))
                or not 0.0 <= progress <= 1.0):
            raise ValueError(
                f'progress must be a number in [0, 1], got {progress!r}')
        return float(progress)

    def set(self, progress: float) -> None:
        """Write the progress.

        Args:
            progress (float): Training progress in ``[0, 1]``.
        """
        self._value.fill_(self.check(progress))

    def get(self) -> Optional[float]:
        """Read the progress.

        Returns:
            float, optional: The progress, None when it was never set.
        """
        value = float(self._value[0])
        return None if value < 0 else value

    def set_loop(self, iters_per_epoch: int, batch_size: int,
                 max_iters: int) -> None:
        """Write the training loop's constants (once, before training).

        With them a sample that knows its position in the sampler's pass
        (:class:`~ehm_mm.datasets.seeded_augment_sampler.SampleKey`) gets
        the exact progress of the iteration it is used in
        (:meth:`progress_at`).

        Args:
            iters_per_epoch (int): Batches per pass of the sampler
                (``len(train_dataloader)``).
            batch_size (int): Samples per batch of one rank.
            max_iters (int): The run's total iterations.
        """
        values = (iters_per_epoch, batch_size, max_iters)
        names = ('iters_per_epoch', 'batch_size', 'max_iters')
        for name, value in zip(names, values):
            if isinstance(value, bool) or not isinstance(
                    value, Integral) or value < 1:
                raise ValueError(f'{name} must be an int >= 1, got {value!r}')
        self._loop.copy_(torch.tensor(values, dtype=torch.int64))

    def loop(self) -> Optional[Tuple[int, int, int]]:
        """Read the loop's constants.

        Returns:
            tuple[int, int, int], optional: ``(iters_per_epoch, batch_size,
            max_iters)``, None when they were never set.
        """
        values = tuple(int(v) for v in self._loop.tolist())
        # all three or none (a worker may read while the hook writes)
        return None if min(values) < 1 else values

    def progress_at(self, sample_idx: Any) -> Optional[float]:
        """The exact progress of the iteration a sample is used in.

        Args:
            sample_idx (Any): The sample's ``results['sample_idx']``; a
                ``SampleKey`` with a ``position`` knows its iteration.

        Returns:
            float, optional: ``min(iteration / max_iters, 1)``; None when the
            sample has no position or the constants are not set.
        """
        if getattr(sample_idx, 'position', None) is None:
            return None
        loop = self.loop()
        if loop is None:
            return None
        iters_per_epoch, batch_size, max_iters = loop
        cur_iter = sample_idx.iteration(iters_per_epoch, batch_size)
        return min(cur_iter / max_iters, 1.0)

    @property
    def is_shared(self) -> bool:
        """bool: Whether the values live in shared memory."""
        return self._value.is_shared() and self._loop.is_shared()


@dataclass
class MaskRequest:
    """What one image's mask needs; the tree is cut later, maybe batched.

    Args:
        img (np.ndarray, optional): The image ``[H, W, C]`` as the
            transform saw it; None at depth 0 (no tree needed).
        noise (Tensor): float32 ``[N]``, the per-patch uniform values.
        depth (int): The drawn depth.
        spec (MaskSpec): The masking; requests cut together must agree.
        cues (tuple): ``(mask_patch_size, scale, colour_weight,
            texture_weight)``, how the image becomes an affinity and the
            mask tokens; requests cut together must agree.
        levels (int, optional): The tree levels this image's mask may be
            cut from (levels ``0 .. levels``); None means ``depth``.
            Defaults to None.
        scores (Tensor, optional): float32 ``[levels - 1, N]``, the random
            scores of the tree levels ``1 .. levels - 1`` for
            ``boundary='subtree'`` (:func:`subtree_order`); None otherwise.
            Defaults to None.
    """

    img: Optional[np.ndarray]
    noise: Tensor
    depth: int
    spec: MaskSpec
    cues: tuple
    levels: Optional[int] = None
    scores: Optional[Tensor] = None


def _level_scores(requests: Sequence[MaskRequest], num_levels: int,
                  num: int) -> Tensor:
    """The requests' subtree scores as :func:`subtree_order` takes them.

    Returns:
        Tensor: float32 ``[B, max(L - 2, 0), N]``; rows an image did not
        draw (levels above its own ``levels``) are 0 and never read.
    """
    rows = max(num_levels - 2, 0)
    scores = torch.zeros(len(requests), rows, num)
    for i, r in enumerate(requests):
        if r.scores is not None:
            take = min(rows, r.scores.shape[0])
            scores[i, :take] = r.scores[:take]
    return scores


def masks_of_requests(requests: Sequence[MaskRequest]
                      ) -> List[Tuple[np.ndarray, int, float]]:
    """Build the trees of a batch of requests at once and cut the masks.

    One :func:`patch_cues` and one :func:`build_hierarchy` call for the
    whole batch, as deep as its deepest request (lower levels do not depend
    on how many are built, every image's tree is its own, and an image
    only uses its own ``levels``), then the masking core's
    :func:`~ehm_mm.models.masking.cut_masks`, so the masks are exactly
    those the requests would get one by one.

    Args:
        requests (Sequence[MaskRequest]): One per image, same ``spec`` and
            ``cues``.

    Returns:
        List[Tuple[np.ndarray, int, float]]: Per image the int64 mask at
        token resolution (1 = masked), the tree level it was cut from
        (``MaskingResult.depth``) and the mean size, in mask patches, of
        the nodes the mask covers (``MaskingResult.node_size``).
    """
    spec, cues = requests[0].spec, requests[0].cues
    if any(r.spec != spec or r.cues != cues for r in requests):
        raise ValueError('cannot cut masks of different mask generators '
                         'together; use one EvolvedHierarchicalMaskGenerator '
                         'per pipeline')
    patch, scale, colour, texture = cues
    batch, num = len(requests), spec.num_patches
    noise = torch.stack([r.noise for r in requests])  # [B, N]
    depth = torch.tensor([r.depth for r in requests])  # [B]
    levels = torch.tensor([
        r.depth if r.levels is None else r.levels for r in requests
    ])  # [B]
    if int(depth.max()) == 0:
        hierarchy = Hierarchy.leaves(batch, spec.grid_size)
    else:
        deep = [i for i, r in enumerate(requests) if r.depth > 0]
        cues = patch_cues(np.stack([requests[i].img for i in deep]), patch)
        if len(deep) < batch:  # depth-0 images only use level 0
            cues = cues.new_zeros(batch, *cues.shape[1:]).index_copy_(
                0, torch.tensor(deep), cues)  # [B, N, D]
        hierarchy = build_hierarchy(
            cue_affinity(cues, colour, texture), spec.grid_size,
            **dict(spec.tree.kwargs(), max_levels=int(levels.max())))
    scores = None
    if spec.boundary == 'subtree':
        scores = _level_scores(requests, hierarchy.num_levels, num)
    result = cut_masks(hierarchy, depth, noise, spec, top=levels,
                       scores=scores)
    mask = result.mask.to(torch.int64).view(batch, *spec.grid_size).numpy()
    mask = mask.repeat(scale, axis=1).repeat(scale, axis=2)
    return [(m, int(d), float(s))
            for m, d, s in zip(mask, result.depth, result.node_size)]


@FUNCTIONS.register_module()
def evolved_mask_collate(data_batch: Sequence) -> Any:
    """``default_collate``, then the batch's masks in one tree-building call.

    For ``EvolvedHierarchicalMaskGenerator(batched=True)``, whose
    ``mask_request`` reaches the data samples through
    ``PackInputs(algorithm_keys=['mask_request'])``. Sets each sample's
    ``mask`` (as the generator does unbatched), ``mask_depth`` and
    ``mask_node_size``, and drops the request. Runs in the dataloader
    worker.

    Args:
        data_batch (Sequence): The packed samples.

    Returns:
        Any: The collated batch, ``data_samples`` with their masks.
    """
    batch = default_collate(data_batch)
    samples = batch.get('data_samples') if isinstance(batch, dict) else None
    if not samples or any('mask_request' not in s for s in samples):
        raise ValueError(
            'evolved_mask_collate needs every data sample to carry a '
            'mask_request: use EvolvedHierarchicalMaskGenerator(batched=True)'
            " and PackInputs(algorithm_keys=['mask_request'])")
    masks = masks_of_requests([s.mask_request for s in samples])
    for sample, (mask, depth, node_size) in zip(samples, masks):
        del sample.mask_request
        sample.set_mask(torch.from_numpy(mask))
        sample.set_field(depth, 'mask_depth')
        sample.set_field(node_size, 'mask_node_size')
    return batch


def _pair(value: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    if isinstance(value, Integral) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, Sequence) or len(value) != 2 or not all(
            isinstance(v, Integral) and not isinstance(v, bool) and v > 0
            for v in value)):
        raise ValueError(f'{name} must be a positive int or a pair of them, '
                         f'got {value!r}')
    return int(value[0]), int(value[1])


@TRANSFORMS.register_module()
class EvolvedHierarchicalMaskGenerator(BaseTransform):
    """EHM masks from the image's own patch cues, depth by training progress.

    A drop-in replacement for mmpretrain's ``SimMIMMaskGenerator`` (and,
    with ``mask_patch_size == model_patch_size``, ``BEiTMaskGenerator``):
    same output key and conventions, ``results['mask']`` an int ``ndarray``
    at the model's token resolution, 1 = masked, every mask patch expanded
    to ``scale x scale`` tokens (``scale = mask_patch_size //
    model_patch_size``).

    Per image:

    1. cues of every ``mask_patch_size`` patch (:func:`patch_cues`) and
       their affinity (:func:`cue_affinity`);
    2. the masking depth: ``d(t)`` of the :class:`DepthSchedule` at the
       current progress ``t``, stochastically rounded;
    3. the tree, built only up to that depth (levels are built bottom-up,
       so the lower levels do not depend on how many are built), and the
       masking core's :func:`~ehm_mm.models.masking.cut_masks`: whole
       nodes of that depth in random order, exactly
       ``num_masking_patches`` (or ``round(mask_ratio * N)``) mask patches.
       Depth 0 is uniform random masking of mask patches, i.e.
       ``SimMIMMaskGenerator`` when ``round == ceil`` for its ratio.

    The options form one :class:`~ehm_mm.models.masking.MaskSpec`
    (:attr:`spec`), as for the model-side
    :class:`~ehm_mm.models.masking.EvolvedHierarchicalMasking`, so
    ``depth_unit`` and ``boundary`` mean the same and are checked the same;
    with ``depth_unit='node_size'`` an image's mask is cut from among the
    ``ceil(levels_per_octave * ceil(d(t)))`` levels built (the module's
    ``k_max`` for a progress).

    **Progress.** ``t`` is read from a :class:`SharedProgress` that
    :class:`~ehm_mm.engine.hooks.MaskProgressHook` writes from the runner
    (``iter / max_iters``, also after ``--resume``). A worker that finds no
    progress yet waits up to ``progress_timeout`` seconds for the hook
    (mmengine's ``IterBasedTrainLoop`` starts its workers before any hook
    runs), then raises. Outside training give ``progress`` explicitly.
    Prefetching workers may read a value a few iterations old; a sample
    drawn by :class:`~ehm_mm.datasets.SeededAugmentSampler` instead gets
    the exact ``t = min(iteration / max_iters, 1)`` of the iteration it is
    used in, once the hook has written the loop's constants
    (:meth:`SharedProgress.progress_at`).

    Random draws come from the global torch generator, which PyTorch and
    mmengine seed per worker.

    **Required Keys:** ``img`` (``[H, W, C]``, ``H x W == input_size``; put
    the transform after the crop and flip).

    **Added Keys:** ``mask`` (int64 ``ndarray`` ``[H / model_patch_size,
    W / model_patch_size]``), ``mask_depth`` (int, the level the mask was
    cut from), ``mask_node_size`` (float, the mean size in mask patches of
    the nodes the mask covers, the split node counted whole, as the
    module's ``MaskingResult.node_size``), ``mask_progress`` (float, the
    ``t`` it used) and ``mask_progress_source`` (``'iteration'``: exact,
    from the sample's position; ``'shared'``: the shared value).

    **Batched** (``batched=True``): instead of ``mask`` the transform adds
    ``mask_request`` (its draws and a copy of the image, a
    :class:`MaskRequest`); pass it on with
    ``PackInputs(algorithm_keys=['mask_request'])`` and collate with
    ``evolved_mask_collate``, which builds the trees of the whole batch in
    one call (in the worker) and sets the same masks (and
    ``mask_depth``, ``mask_node_size``) the unbatched transform would.

    Args:
        input_size (int | tuple[int, int]): Image size ``H`` (x ``W``).
            Defaults to 192.
        mask_patch_size (int): Side of a mask patch (a tree leaf) in
            pixels. Defaults to 32.
        model_patch_size (int): Side of a model token in pixels.
            Defaults to 4.
        mask_ratio (float): Fraction of mask patches masked, in
            ``(0, 1)``; ``round(mask_ratio * N)`` are masked. Defaults to
            0.6.
        num_masking_patches (int, optional): Mask exactly this many mask
            patches instead of using ``mask_ratio`` (BEiT's convention).
            Defaults to None.
        d_min (float): Depth at the start of training. Defaults to 0.
        d_max (float): Depth at the end of training: at most
            ``ceil(log2 N)`` with ``depth_unit='level'``, ``log2 N`` with
            ``'node_size'``. Defaults to 3.
        schedule (str): ``'linear'``, ``'cosine'``, ``'sqrt'``, ``'step'``
            or ``'constant'``. Defaults to 'linear'.
        num_steps (int, optional): Stages of the ``'step'`` schedule.
            Defaults to None.
        hierarchy_cfg (dict, optional): Keyword options of
            ``build_hierarchy`` (``rounds``, ``tolerance``).
            Defaults to None.
        colour_weight (float): Weight of the mean-colour cues.
            Defaults to 1.
        texture_weight (float): Weight of the gradient-texture cues.
            Defaults to 1.
        progress (float, optional): A fixed progress for use outside
            training (e.g. to look at masks); the hook overwrites it.
            Defaults to None.
        progress_timeout (float): Seconds a worker waits for the first
            progress. Defaults to 600.
        batched (bool): Leave the trees to ``evolved_mask_collate``.
            Defaults to False.
        depth_unit (str): What a depth names: ``'level'`` (a tree level)
            or ``'node_size'`` (the level whose mean node size is closest
            to ``2**d`` mask patches). Defaults to 'level'.
        levels_per_octave (float): With ``depth_unit='node_size'``, tree
            levels built per unit of depth (per doubling of the node
            size), ``>= 1``: the trees are ``ceil(levels_per_octave *
            ceil(d(t)))`` levels deep (at most ``2 * ceil(log2 N)``); an
            image whose tree is still finer there uses its deepest level.
            Unused with ``'level'``. Defaults to 3.0.
        boundary (str): Which patches of the one partly masked node per
            image are masked: ``'random'`` ones, or ``'subtree'``, in the
            order of the node's own subtree, so that they form whole
            descendants. Defaults to 'random'.
    """

    def __init__(self,
                 input_size: Union[int, Sequence[int]] = 192,
                 mask_patch_size: int = 32,
                 model_patch_size: int = 4,
                 mask_ratio: float = 0.6,
                 num_masking_patches: Optional[int] = None,
                 d_min: float = 0.,
                 d_max: float = 3.,
                 schedule: str = 'linear',
                 num_steps: Optional[int] = None,
                 hierarchy_cfg: Optional[dict] = None,
                 colour_weight: float = 1.0,
                 texture_weight: float = 1.0,
                 progress: Optional[float] = None,
                 progress_timeout: float = 600.,
                 batched: bool = False,
                 depth_unit: str = 'level',
                 levels_per_octave: float = 3.0,
                 boundary: str = 'random') -> None:
        self.input_size = _pair(input_size, 'input_size')
        self.mask_patch_size = _pair(mask_patch_size, 'mask_patch_size')[0]
        self.model_patch_size = _pair(model_patch_size, 'model_patch_size')[0]
        if self.mask_patch_size % self.model_patch_size:
            raise ValueError(
                f'mask_patch_size ({self.mask_patch_size}) must be a multiple'
                f' of model_patch_size ({self.model_patch_size})')
        if any(s % self.mask_patch_size for s in self.input_size):
            raise ValueError(
                f'input_size {self.input_size} must be a multiple of '
                f'mask_patch_size ({self.mask_patch_size})')
        self.grid_size = tuple(s // self.mask_patch_size
                               for s in self.input_size)
        self.scale = self.mask_patch_size // self.model_patch_size
        if self.grid_size[0] * self.grid_size[1] < 2:
            raise ValueError(f'the mask grid {self.grid_size} needs at least '
                             'two mask patches')
        if 'max_levels' in (hierarchy_cfg or {}):
            raise ValueError('hierarchy_cfg.max_levels is set by the depth; '
                             'leave it out')
        self.hierarchy_cfg = dict(hierarchy_cfg or {})
        self.spec = MaskSpec.create(
            self.grid_size, mask_ratio, d_min, d_max, schedule, num_steps,
            hierarchy_cfg, depth_unit, levels_per_octave, boundary,
            num_masking_patches)
        if not 0 < self.spec.num_masked < self.num_patches:
            raise ValueError(
                f'the masked count must be in [1, {self.num_patches - 1}] for '
                f'the {self.grid_size[0]}x{self.grid_size[1]} mask grid, got '
                f'{self.spec.num_masked} (mask_ratio={mask_ratio!r}, '
                f'num_masking_patches={num_masking_patches!r})')
        self.colour_weight = float(colour_weight)
        self.texture_weight = float(texture_weight)
        if not (self.colour_weight >= 0 and self.texture_weight >= 0):
            raise ValueError('colour_weight and texture_weight must be >= 0')
        if not progress_timeout > 0:
            raise ValueError(
                f'progress_timeout must be > 0, got {progress_timeout!r}')
        self.progress_timeout = float(progress_timeout)
        self.progress = SharedProgress(progress)
        self.batched = bool(batched)

    @property
    def num_patches(self) -> int:
        """int: Mask patches per image ``N`` (tree leaves)."""
        return self.grid_size[0] * self.grid_size[1]

    def set_progress(self, progress: float) -> None:
        """Set the training progress the workers use.

        Args:
            progress (float): ``iter / max_iters`` in ``[0, 1]``.
        """
        self.progress.set(progress)

    def current_progress(self) -> float:
        """The progress to use now, waiting for the hook in a worker.

        Returns:
            float: Progress in ``[0, 1]``.

        Raises:
            RuntimeError: If no progress was set (in the main process at
                once; in a worker after ``progress_timeout`` seconds).
        """
        progress = self.progress.get()
        if progress is not None:
            return progress
        if get_worker_info() is not None:
            deadline = time.monotonic() + self.progress_timeout
            while progress is None and time.monotonic() < deadline:
                time.sleep(0.01)
                progress = self.progress.get()
            if progress is not None:
                return progress
        raise RuntimeError(
            f'{type(self).__name__}: no training progress was set'
            + (f' within {self.progress_timeout:g} s'
               if get_worker_info() is not None else '') +
            '. Add custom_hooks=[dict(type="MaskProgressHook")] to the '
            'config, or give progress=... when using the transform outside '
            'training.')

    def progress_of(self, results: dict) -> Tuple[float, str]:
        """The progress of one sample and where it came from.

        Args:
            results (dict): The sample's result dict; its ``sample_idx``
                may carry a position (:class:`SeededAugmentSampler`).

        Returns:
            tuple[float, str]: The progress and ``'iteration'`` (exact, from
            the sample's iteration) or ``'shared'`` (the shared value, or
            the fixed ``progress``).
        """
        sample_idx = results.get('sample_idx')
        progress = self.progress.progress_at(sample_idx)
        if progress is not None:
            return progress, 'iteration'
        shared = self.current_progress()
        # the hook writes the loop's constants before the first progress: a
        # worker that waited for that progress finds them now
        progress = self.progress.progress_at(sample_idx)
        if progress is not None:
            return progress, 'iteration'
        return shared, 'shared'

    def request(self, img: np.ndarray, progress: float) -> MaskRequest:
        """Draw one image's patch values and depth.

        Random draws, in order: ``torch.rand(N)`` (the patch values, MAE's
        draw), when ``d(t)`` is not an integer one for the rounding, and
        with ``boundary='subtree'`` and a drawn depth ``> 0``
        ``torch.rand(levels - 1, N)`` for the order of every node's
        children (the scores :func:`subtree_order` would draw), when
        ``levels >= 2``.

        Args:
            img (np.ndarray): ``[H, W, C]``.
            progress (float): Training progress in ``[0, 1]``.

        Returns:
            MaskRequest: What :func:`masks_of_requests` needs.
        """
        noise = torch.rand(self.num_patches)
        value = self.spec.schedule(progress)
        depth = int(stochastic_round(value, 1)[0])
        levels = self.spec.tree_levels(
            depth if self.spec.depth_unit == 'level' else math.ceil(value))
        scores = None
        if self.spec.boundary == 'subtree' and depth > 0 and levels >= 2:
            scores = torch.rand(levels - 1, self.num_patches)
        cues = (self.mask_patch_size, self.scale, self.colour_weight,
                self.texture_weight)
        # a copy: later transforms may change the image in place
        return MaskRequest(img.copy() if depth > 0 else None, noise, depth,
                           self.spec, cues, levels, scores)

    def transform(self, results: dict) -> dict:
        """Add the mask of one image (or, batched, its request).

        Args:
            results (dict): Result dict with ``img``.

        Returns:
            dict: ``results`` with ``mask``, ``mask_depth``,
            ``mask_node_size``, ``mask_progress`` and
            ``mask_progress_source`` added; with
            ``batched=True`` ``mask_request`` (and the drawn
            ``mask_depth``) instead of ``mask`` and ``mask_node_size``.
        """
        img = results['img']
        if (not isinstance(img, np.ndarray) or img.ndim != 3
                or tuple(img.shape[:2]) != self.input_size):
            shape = getattr(img, 'shape', type(img).__name__)
            raise ValueError(
                f'{type(self).__name__} needs results["img"] as an [H, W, C]'
                f' array of size {self.input_size}, got {shape}; put it '
                'after the crop to input_size')
        progress, source = self.progress_of(results)
        request = self.request(img, progress)
        if self.batched:
            results.update(mask_request=request, mask_depth=request.depth,
                           mask_progress=progress,
                           mask_progress_source=source)
            return results
        mask, depth, node_size = masks_of_requests([request])[0]
        results.update(mask=mask, mask_depth=depth,
                       mask_node_size=node_size, mask_progress=progress,
                       mask_progress_source=source)
        return results

    def __repr__(self) -> str:
        spec = self.spec
        return (f'{type(self).__name__}(input_size={self.input_size}, '
                f'mask_patch_size={self.mask_patch_size}, '
                f'model_patch_size={self.model_patch_size}, '
                f'num_masking_patches={spec.num_masked}, '
                f'depth_schedule={spec.schedule!r}, '
                f'hierarchy_cfg={self.hierarchy_cfg}, '
                f'colour_weight={self.colour_weight}, '
                f'texture_weight={self.texture_weight}, '
                f'batched={self.batched}, {spec.unit_repr()})')
