# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""A harder SyntheticShapes: several objects of two parts, occlusion, scale.

Made for the masking study, where part-level and object-level masks must
mean different things: every object is built from two parts with their own
texture, a scene holds a main object and one to three smaller others that
may occlude it, and sizes vary threefold.
"""
import json
import os
import os.path as osp
from typing import List, Tuple

import numpy as np
from mmpretrain.registry import DATASETS
from PIL import Image

from .shape_drawing import (
    OBJECT_TEXTURES,
    SHAPE_CLASSES,
    _grid,
    draw_background,
    draw_shape,
    draw_texture,
)
from .synthetic_shapes import _SPLIT_IDS, SyntheticShapes

#: Bump when the scene drawing changes, so stale caches are never reused.
SCENE_VERSION = 1
#: Main object radius range and the others' (relative to the image side).
MAIN_RADIUS = (0.2, 0.34)
OTHER_RADIUS = (0.11, 0.2)
#: The main object keeps at least this fraction of its area visible.
MIN_VISIBLE = 0.6
#: Inner part: within this fraction of the radius (ring: one half).
CORE_FRACTION = 0.6


def object_parts(label: int, size: int, center: Tuple[float, float],
                 radius: float, angle: float) -> Tuple[np.ndarray, ...]:
    """Rasterise an object as two parts.

    The inner part is the shape within ``CORE_FRACTION`` of its radius, the
    outer part the rest (arms, corners, rim); a ring, which has no centre,
    is split into two halves along its rotated axis.

    Args:
        label (int): Index into :data:`SHAPE_CLASSES`.
        size (int): Canvas side in pixels.
        center (tuple[float, float]): ``(y, x)`` in ``[0, 1]``.
        radius (float): Radius relative to the canvas side.
        angle (float): Rotation in radians.

    Returns:
        tuple[numpy.ndarray, ...]: Boolean masks ``[S, S]`` of the inner
        and the outer part (disjoint, union = the shape).
    """
    inside = draw_shape(SHAPE_CLASSES[label], size, center, radius, angle)
    y, x = _grid(size)
    dy, dx = y - center[0], x - center[1]
    if SHAPE_CLASSES[label] == 'ring':
        first = (dx * np.cos(angle) + dy * np.sin(angle)) >= 0
    else:
        first = dy**2 + dx**2 <= (CORE_FRACTION * radius)**2
    return inside & first, inside & ~first


def _object_textures(label: int, size: int, rng: np.random.Generator,
                     class_appearance: bool) -> Tuple[np.ndarray, ...]:
    """The two part textures of an object (class-typical or random)."""
    num = len(OBJECT_TEXTURES)
    if class_appearance:
        hue = label / len(SHAPE_CLASSES)
        return (draw_texture(OBJECT_TEXTURES[label], size, rng, hue),
                draw_texture(OBJECT_TEXTURES[(label + 3) % num], size, rng,
                             (hue + 0.5) % 1.0))
    kinds = rng.choice(num, size=2, replace=False)
    return (draw_texture(OBJECT_TEXTURES[int(kinds[0])], size, rng),
            draw_texture(OBJECT_TEXTURES[int(kinds[1])], size, rng))


def scene_layout(label: int, size: int,
                 rng: np.random.Generator) -> List[tuple]:
    """Place the objects of a scene (no painting).

    The main object (class ``label``, radius in :data:`MAIN_RADIUS`) and 1
    to 3 others of other classes (radius in :data:`OTHER_RADIUS`) get random
    positions, rotations and a random depth order. An object above the main
    one that would leave less than :data:`MIN_VISIBLE` of it visible is
    moved (up to 10 tries, then dropped).

    Args:
        label (int): The main object's class.
        size (int): Side length S in pixels.
        rng (numpy.random.Generator): Source of randomness.

    Returns:
        list[tuple]: ``(class, (inner, outer), depth rank)`` per object, the
        main object first; higher ranks are painted later (on top).
    """
    num_other = int(rng.integers(1, 4))
    others = [c for c in range(len(SHAPE_CLASSES)) if c != label]
    classes = [label] + [
        int(c) for c in rng.choice(others, size=num_other, replace=False)
    ]
    radius = float(rng.uniform(*MAIN_RADIUS))
    center = tuple(rng.uniform(radius, 1.0 - radius, size=2))
    main = object_parts(label, size, center, radius,
                        float(rng.uniform(0, 2 * np.pi)))
    main_shape = main[0] | main[1]
    main_area = int(main_shape.sum())
    order = rng.permutation(len(classes))
    main_rank = int(np.nonzero(order == 0)[0][0])
    occluding = np.zeros((size, size), dtype=bool)
    objects = [(label, main, main_rank)]
    for k, cls in enumerate(classes[1:], start=1):
        rank = int(np.nonzero(order == k)[0][0])
        for _ in range(10):
            r = float(rng.uniform(*OTHER_RADIUS))
            c = tuple(rng.uniform(r, 1.0 - r, size=2))
            parts = object_parts(cls, size, c, r,
                                 float(rng.uniform(0, 2 * np.pi)))
            if rank < main_rank:  # painted below the main object
                objects.append((cls, parts, rank))
                break
            cover = occluding | parts[0] | parts[1]
            if int((main_shape & ~cover).sum()) >= MIN_VISIBLE * main_area:
                occluding = cover
                objects.append((cls, parts, rank))
                break
    return objects


def render_scene(label: int,
                 size: int,
                 rng: np.random.Generator,
                 class_appearance: bool = True) -> Tuple[np.ndarray, ...]:
    """Render one scene whose main object has class ``label``.

    The objects of :func:`scene_layout` (drawn first from ``rng``) are
    painted in their depth order on a textured or cluttered background, so
    the smaller ones may occlude the main object (which stays at least
    :data:`MIN_VISIBLE` visible). Each object has two parts
    (:func:`object_parts`) with their own texture; with
    ``class_appearance`` the textures and hues are typical of the class,
    as in :func:`~ehm_mm.datasets.shape_drawing.render_sample`.

    Args:
        label (int): The main object's class, an index into
            :data:`SHAPE_CLASSES`.
        size (int): Side length S in pixels.
        rng (numpy.random.Generator): Source of randomness.
        class_appearance (bool): Class-typical part textures. Defaults to
            True.

    Returns:
        tuple[numpy.ndarray, ...]: uint8 arrays: the RGB image
        ``[S, S, 3]``; the visible main-object mask ``[S, S]`` (1 = main
        object); the class map ``[S, S]`` (0 = background, ``c + 1`` =
        class ``c``, the visible object at each pixel); the part map
        ``[S, S]`` (0 = background, ``2 k + p + 1`` = part ``p`` of object
        ``k``, the main object being ``k = 0``).
    """
    if not 0 <= label < len(SHAPE_CLASSES):
        raise ValueError(f'label must be in [0, {len(SHAPE_CLASSES)}), '
                         f'got {label}')
    objects = scene_layout(label, size, rng)
    style = ('noise', 'speckle', 'clutter')[int(rng.integers(3))]
    image = draw_background(style, size, rng)
    class_map = np.zeros((size, size), dtype=np.uint8)
    part_map = np.zeros((size, size), dtype=np.uint8)
    for index, (cls, parts, _) in sorted(
            enumerate(objects), key=lambda item: item[1][2]):
        textures = _object_textures(cls, size, rng, class_appearance)
        for p, (part, texture) in enumerate(zip(parts, textures)):
            image = np.where(part[..., None], texture, image)
            class_map[part] = cls + 1
            part_map[part] = 2 * index + p + 1
    image = np.clip(image + rng.normal(0.0, 0.02, size=image.shape), 0, 1)
    main_mask = (part_map == 1) | (part_map == 2)
    return ((image * 255.0).round().astype(np.uint8),
            main_mask.astype(np.uint8), class_map, part_map)


@DATASETS.register_module()
class SyntheticScenes(SyntheticShapes):
    """Scenes of several two-part objects with occlusion and varied scale.

    A harder variant of :class:`SyntheticShapes` (same arguments, same
    caching and determinism): each image holds a main object of class
    ``gt_label`` (``idx % 6``) and 1 to 3 smaller objects of other classes,
    painted in random depth order (so they may occlude the main object, which
    stays at least 60% visible), every object made of two differently
    textured parts (see :func:`render_scene`). Cached under
    ``data_root/scenes-<split>-n<num>-s<size>-seed<seed>-v<V>/`` with
    ``images/``, ``masks/`` (visible main object, for ``LoadObjectMask``),
    ``classes/`` (per-pixel class map, 0 = background, ``c + 1`` = class
    ``c``) and ``parts/`` (per-pixel part ids).

    Each data info holds ``img_path``, ``gt_label``, ``mask_path``,
    ``seg_path`` and ``part_path``; load the maps with
    :class:`~ehm_mm.datasets.transforms.LoadLabelMap`.
    """

    @property
    def cache_dir(self) -> str:
        """str: The folder holding this split's images and maps."""
        name = (f'scenes-{self.split}-n{self.num_samples}-s{self.img_size}-'
                f'seed{self.seed}' + ('' if self.class_appearance else '-ra') +
                f'-v{SCENE_VERSION}')
        return osp.join(self.data_root, name)

    def _meta(self) -> dict:
        return dict(super()._meta(), variant='scenes',
                    scene_version=SCENE_VERSION)

    def _generate(self, folder: str) -> List[int]:
        """Write all images and maps of this split into ``folder``."""
        for sub in ('images', 'masks', 'classes', 'parts'):
            os.makedirs(osp.join(folder, sub))
        labels = []
        for idx in range(self.num_samples):
            label = idx % len(SHAPE_CLASSES)
            rng = np.random.default_rng(
                [self.seed, _SPLIT_IDS[self.split], idx, 1])
            image, mask, classes, parts = render_scene(
                label, self.img_size, rng, self.class_appearance)
            name = f'{idx:06d}.png'
            Image.fromarray(image).save(osp.join(folder, 'images', name))
            Image.fromarray(mask * 255).save(osp.join(folder, 'masks', name))
            Image.fromarray(classes).save(osp.join(folder, 'classes', name))
            Image.fromarray(parts).save(osp.join(folder, 'parts', name))
            labels.append(label)
        with open(osp.join(folder, 'meta.json'), 'w') as f:
            json.dump(dict(self._meta(), labels=labels), f)
        return labels

    def load_data_list(self) -> List[dict]:
        """Generate the cache if needed and list its samples.

        Returns:
            list[dict]: One dict per sample with ``img_path``, ``gt_label``,
            ``mask_path``, ``seg_path`` and ``part_path``.
        """
        if self._geometry_suffix():
            raise ValueError(
                'SyntheticScenes draws its own object sizes; object_radius '
                'and equal_area apply to SyntheticShapes only, got '
                f'object_radius={self.object_radius}, '
                f'equal_area={self.equal_area}')
        data_list = super().load_data_list()
        for i, info in enumerate(data_list):
            info['seg_path'] = osp.join(self.cache_dir, 'classes',
                                        f'{i:06d}.png')
            info['part_path'] = osp.join(self.cache_dir, 'parts',
                                         f'{i:06d}.png')
        return data_list
