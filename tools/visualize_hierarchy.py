# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Draw the EHM hierarchy and evolved masks of images as PNGs.

For every image it writes ``<out-dir>/<name>_hierarchy.png`` with two rows:

1. the image and the partition at every level of its tree (each node
   tinted in its own colour and outlined),
2. masks at several depths (masked patches greyed, MAE style, with the
   outlines of the nodes at that depth).

The affinity comes from the model's own attention: an EHM-MAE config's
teacher (``model.teacher_affinity``), or the backbone of any mmpretrain
ViT config, or, without ``--config``, a ViT (``MAEViT``, ``--arch``) that
is randomly initialised unless ``--checkpoint`` is given.

Example::

    python tools/visualize_hierarchy.py demo/cat.jpg demo/dog.jpg \\
        --config configs/ehm_mae_vit-b.py --checkpoint epoch_300.pth
    python tools/visualize_hierarchy.py demo/cat.jpg  # random ViT-B/16
"""
import argparse
import os
import os.path as osp
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.models import MAEViT
from mmpretrain.registry import MODELS
from PIL import Image
from torch import nn

import ehm_mm  # noqa: F401  (registers the EHM modules)
from ehm_mm.models.masking import (
    EvolvedHierarchicalMasking,
    attention_affinity,
)
from ehm_mm.visualization import hierarchy_figure, load_images, to_inputs


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw EHM hierarchies and masks over images.')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--config', help='model config (EHM-MAE or any '
                        'mmpretrain ViT model)')
    parser.add_argument('--checkpoint', help='weights to load')
    parser.add_argument('--out-dir', default='work_dirs/hierarchy_vis',
                        help='where the PNGs go')
    parser.add_argument('--arch', default='b',
                        help='ViT arch without --config (default b)')
    parser.add_argument('--img-size', type=int, default=224,
                        help='input size without --config (default 224)')
    parser.add_argument('--patch-size', type=int, default=16,
                        help='patch size without --config (default 16)')
    parser.add_argument('--layers', type=int, nargs='+', default=None,
                        help='attention layers of the affinity (default '
                        'all; the config\'s own choice with EHM-MAE)')
    parser.add_argument('--depths', type=int, nargs='+',
                        default=[0, 1, 2, 3, 4, 5],
                        help='mask depths to draw (default 0 .. 5)')
    parser.add_argument('--mask-ratio', type=float, default=None,
                        help='mask ratio (default: the model\'s, or 0.75)')
    parser.add_argument('--panel-size', type=int, default=224,
                        help='panel height in pixels (default 224)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the mask draws (default 0)')
    parser.add_argument('--device', default='cpu', help='device')
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace) -> Tuple[nn.Module, nn.Module]:
    """Build the model and find its ViT encoder.

    Returns:
        Tuple[nn.Module, nn.Module]: The model and the encoder.
    """
    if args.config:
        cfg = Config.fromfile(args.config)
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        if 'data_preprocessor' in cfg:  # as the Runner does
            cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
        model = MODELS.build(cfg.model)
        model.init_weights()
        encoder = getattr(model, 'backbone', model)
    else:
        model = encoder = MAEViT(
            arch=args.arch, img_size=args.img_size,
            patch_size=args.patch_size)
        model.init_weights()
    if args.checkpoint:
        if not osp.isfile(args.checkpoint):
            raise FileNotFoundError(
                f'--checkpoint {args.checkpoint} does not exist')
        # an MAE checkpoint keeps the encoder under `backbone.`
        revise = [] if args.config else [(r'^backbone\.', '')]
        load_checkpoint(model, args.checkpoint, map_location='cpu',
                        revise_keys=revise)
    model.to(args.device)
    model.eval()
    return model, encoder


def find_masking(model: nn.Module, mask_ratio: Optional[float],
                 grid: Tuple[int, int]) -> EvolvedHierarchicalMasking:
    """The model's own mask generator, or a default one."""
    for module in model.modules():
        if isinstance(module, EvolvedHierarchicalMasking):
            if mask_ratio is None:
                return module
            return EvolvedHierarchicalMasking(
                grid, mask_ratio=mask_ratio, d_max=0.0,
                hierarchy_cfg=module.hierarchy_cfg)
    # The depths are given explicitly here: the schedule is unused.
    return EvolvedHierarchicalMasking(
        grid, mask_ratio=mask_ratio or 0.75, d_max=0.0)


def affinity_fn(model: nn.Module, encoder: nn.Module,
                layers: Optional[List[int]]
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's teacher affinity, or its (teacher) encoder's attention."""
    if layers is None and hasattr(model, 'teacher_affinity'):
        return model.teacher_affinity
    teacher = getattr(model, 'teacher', None)
    source = encoder if teacher is None else teacher
    return lambda inputs: attention_affinity(source, inputs, layers=layers)


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    args = parse_args(argv)
    model, encoder = build_model(args)
    grid = tuple(int(s) for s in encoder.patch_resolution)
    masking = find_masking(model, args.mask_ratio, grid).to(args.device)
    patch = encoder.patch_embed.projection.kernel_size
    size = (grid[0] * patch[0], grid[1] * patch[1])
    images = load_images(args.images, size)
    inputs = to_inputs(model, images, args.device)
    with torch.no_grad():
        affinity = affinity_fn(model, encoder, args.layers)(inputs)
    results = []
    for depth in args.depths:
        gen = torch.Generator(device=args.device).manual_seed(args.seed)
        results.append(masking(affinity, depth=depth, generator=gen))
    tree = masking.hierarchy(affinity)  # every level, to draw
    ancestors = tree.ancestors.view(len(images), -1, *grid).cpu().numpy()
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for i, (path, image) in enumerate(zip(args.images, images)):
        masks, seen = [], set()
        for out in results:
            depth = int(out.depth[i])  # clamped to this tree's height
            if depth not in seen:
                seen.add(depth)
                masks.append(
                    (depth, out.mask[i].view(*grid).cpu().numpy()))
        width = round(image.shape[1] * args.panel_size / image.shape[0])
        big = np.asarray(Image.fromarray(image).resize(
            (width, args.panel_size), Image.BICUBIC))
        figure = hierarchy_figure(big, ancestors[i], masks)
        name = osp.splitext(osp.basename(path))[0]
        out_path = osp.join(args.out_dir, f'{name}_hierarchy.png')
        Image.fromarray(figure).save(out_path)
        written.append(out_path)
        print(f'{path}: {int(tree.heights[i])} levels above the patches, '
              f'depths {[d for d, _ in masks]} -> {out_path}')
    return written


if __name__ == '__main__':
    main()
