# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Images/s of the pipeline EHM mask generator in one dataloader worker.

A dataloader worker runs one image at a time on one CPU thread, so that is
what is measured (``torch.set_num_threads(1)``). For each mask grid at
224 px, SimMIM's 7 x 7 grid of 32 px mask patches (Swin tokens of 4 px) and
the 14 x 14 grid of 16 px patches (ViT; BEiT / MaskFeat / MAE), it prints

* images/s of the mask generator alone, on already cropped images:
  mmpretrain's ``SimMIMMaskGenerator`` / ``BEiTMaskGenerator`` and
  ``EvolvedHierarchicalMaskGenerator`` at fixed depths;
* images/s of the whole training pipeline (JPEG decode, random resized
  crop, flip, mask, pack) with each generator, and its time relative to the
  same pipeline with mmpretrain's generator, measured in the same run;
* the same for ``batched=True``: the transform computes cues and draws,
  and ``evolved_mask_collate`` builds the trees of a whole batch (all the
  images, ``--images``) in one call, in the worker.

The images are JPEGs of 320 x 256 px written to a temporary folder:
smooth random colour fields with striped regions (structure at several
scales, so that the trees are not those of noise).

Example::

    python tools/benchmarks/bench_mask_generator.py
    python tools/benchmarks/bench_mask_generator.py --images 64 --repeats 5
    python tools/benchmarks/bench_mask_generator.py --depth-unit node_size \
        --boundary subtree
"""
import argparse
import os.path as osp
import statistics
import tempfile
import time
from typing import Callable, List

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.registry import FUNCTIONS, DefaultScope
from PIL import Image

import ehm_mm  # noqa: F401  (registers the transform)

SIZE = 224
GRIDS = {
    # name: (mask patch, model patch, mmpretrain generator, depths)
    '7x7 (32 px mask patches, 4 px tokens; SimMIM Swin)':
    (32, 4,
     dict(type='SimMIMMaskGenerator', input_size=SIZE, mask_patch_size=32,
          model_patch_size=4, mask_ratio=0.6), (0, 1, 2, 3)),
    '14x14 (16 px patches; ViT: BEiT / MaskFeat / MAE)':
    (16, 16,
     dict(type='BEiTMaskGenerator', input_size=SIZE // 16,
          num_masking_patches=78, min_num_patches=15), (0, 1, 3, 5)),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark the pipeline EHM mask generator.')
    parser.add_argument('--images', type=int, default=64,
                        help='distinct images, also the batch of the '
                        'batched arms (default 64)')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed passes over the images; the median '
                        'pass is reported (default 3)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--depth-unit', default='level',
                        choices=['level', 'node_size'],
                        help='EvolvedHierarchicalMaskGenerator.depth_unit: '
                        'the depths are then node sizes 2**d (default '
                        'level)')
    parser.add_argument('--boundary', default='random',
                        choices=['random', 'subtree'],
                        help='EvolvedHierarchicalMaskGenerator.boundary '
                        '(default random)')
    return parser.parse_args()


def write_images(folder: str, num: int, seed: int) -> List[str]:
    """Smooth colour fields with striped regions, as JPEG files."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num):
        low = rng.uniform(0, 255, size=(4, 5, 3)).astype(np.uint8)
        img = np.asarray(
            Image.fromarray(low).resize((320, 256), Image.BICUBIC),
            dtype=np.float32)
        for _ in range(3):  # striped rectangles of several sizes
            h, w = rng.integers(32, 128, size=2)
            y, x = rng.integers(0, 256 - h), rng.integers(0, 320 - w)
            period = int(rng.integers(3, 12))
            stripes = (np.arange(w) // period) % 2 * 80 - 40
            img[y:y + h, x:x + w] += stripes[None, :, None]
        path = osp.join(folder, f'img_{i}.jpg')
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
            path, quality=90)
        paths.append(path)
    return paths


def rate(fn: Callable[[int], object], num: int, repeats: int,
         finish: Callable[[list], object] = None) -> float:
    """Images/s: median over ``repeats`` timed passes of ``num`` calls.

    ``finish`` (e.g. the collate function) gets the list of results of a
    pass, inside the timing.
    """
    for i in range(min(num, 4)):  # warm-up
        fn(i)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outs = [fn(i) for i in range(num)]
        if finish is not None:
            finish(outs)
        times.append(time.perf_counter() - start)
    return num / statistics.median(times)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    print(f'one thread (a dataloader worker), {SIZE} px, '
          f'{args.images} images x {args.repeats} passes (median), '
          f'depth_unit={args.depth_unit}, boundary={args.boundary}')
    with tempfile.TemporaryDirectory() as folder, \
            DefaultScope.overwrite_default_scope('mmpretrain'):
        paths = write_images(folder, args.images, args.seed)
        front = Compose([
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=SIZE,
                 crop_ratio_range=(0.67, 1.0)),
            dict(type='RandomFlip', prob=0.5),
        ])
        crops = [front(dict(img_path=p))['img'] for p in paths]
        collate = FUNCTIONS.get('evolved_mask_collate')
        for grid, (mask_patch, model_patch, theirs, depths) in GRIDS.items():
            arms = [(theirs['type'], theirs, False)]
            for batched in (False, True):
                for depth in depths:
                    name = f'EHM depth {depth}' + (' batched' * batched)
                    arms.append((name, dict(
                        type='EvolvedHierarchicalMaskGenerator',
                        input_size=SIZE, mask_patch_size=mask_patch,
                        model_patch_size=model_patch, mask_ratio=0.6,
                        d_max=float(depth), schedule='constant',
                        depth_unit=args.depth_unit, boundary=args.boundary,
                        progress=0.0, batched=batched), batched))
            print(f'\nmask grid {grid}')
            print(f'deepest EHM arm: {Compose([arms[-1][1]]).transforms[0]!r}')
            print(f'{"generator":<22} {"alone img/s":>12} '
                  f'{"pipeline img/s":>15} {"pipeline time ratio":>20}')
            baseline = None
            for name, cfg, batched in arms:
                pack = dict(type='PackInputs', algorithm_keys=(
                    ['mask_request'] if batched else []))
                mask = Compose([cfg] + [pack] * batched)
                full = Compose(list(front.transforms) + [cfg, pack])
                finish = collate if batched else None
                alone = rate(lambda i: mask(dict(img=crops[i])), args.images,
                             args.repeats, finish)
                whole = rate(lambda i: full(dict(img_path=paths[i])),
                             args.images, args.repeats, finish)
                baseline = baseline or whole
                print(f'{name:<22} {alone:12.0f} {whole:15.0f} '
                      f'{baseline / whole:20.2f}')


if __name__ == '__main__':
    main()
