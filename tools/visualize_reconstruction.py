# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Draw what a masked-image model reconstructs under EHM and random masks.

For a checkpoint of an EHM-MAE or EHM-SimMIM config and a few images it
writes one PNG grid, a row per image:

    input | EHM mask at --depth | reconstruction | random (MAE) mask |
    reconstruction

The masks come from the model's own ``generate_masks`` (the EHM mask from
its teacher's hierarchy at the chosen depth; depth 0 is MAE's random
masking at the same ratio), the reconstructions from its encoder, neck and
head as in training. Masked patches are greyed; a reconstruction shows the
model's output in the masked patches and the input elsewhere,
de-normalised to pixels, titled with that image's loss (the head's
training loss on that image alone). Without ``--images`` it takes the
first images of the config's test (else validation) dataset.

Examples::

    python tools/visualize_reconstruction.py \\
        configs/ehm_mae_vit-tiny_demo.py \\
        work_dirs/ehm_mae_vit-tiny_demo/epoch_20.pth
    python tools/visualize_reconstruction.py configs/ehm_mae_vit-b.py \\
        epoch_300.pth --images cat.jpg dog.jpg --depth 3 --device cuda
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from PIL import Image
from torch import nn

# Make `import ehm_mm` work from a plain checkout (no `pip install -e`).
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
from ehm_mm.visualization import (  # noqa: E402
    load_images,
    reconstruction_row,
    stack_rows,
    to_images,
    to_inputs,
)

#: The model types this tool reconstructs with.
SUPPORTED = ('EHMMAE', 'EHMSimMIM')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Draw EHM-MAE / EHM-SimMIM reconstructions under an EHM '
        'mask and a random (MAE) mask.')
    parser.add_argument('config', help='EHM-MAE or EHM-SimMIM config')
    parser.add_argument('checkpoint', help='checkpoint of that config')
    parser.add_argument('--images', nargs='+', default=None,
                        help='image files (default: the first '
                        '--num-images of the config\'s test dataset)')
    parser.add_argument('--num-images', type=int, default=4,
                        help='images taken from the dataset (default 4)')
    parser.add_argument('--depth', type=int, default=None,
                        help='depth of the EHM mask (default: the '
                        'schedule\'s final depth d(1))')
    parser.add_argument('--out', default='work_dirs/reconstruction.png',
                        help='the PNG written')
    parser.add_argument('--panel-size', type=int, default=128,
                        help='smallest panel height in pixels (default 128)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the mask draws (default 0)')
    parser.add_argument('--device', default='cpu', help='device (cpu)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs (e.g. '
        'test_dataloader.dataset.data_root=DIR)')
    return parser.parse_args(argv)


def build_model(config: str, checkpoint: str, device: str,
                cfg_options: Optional[dict] = None
                ) -> Tuple[nn.Module, Config]:
    """Build the config's model and load the checkpoint into it.

    Args:
        config (str): Config path.
        checkpoint (str): Checkpoint path.
        device (str): Device to put the model on.
        cfg_options (dict, optional): Overrides merged into the config.
            Defaults to None.

    Returns:
        tuple[nn.Module, Config]: The model in eval mode and the config.

    Raises:
        FileNotFoundError: When the checkpoint does not exist.
        ValueError: When the model is no EHM-MAE / EHM-SimMIM.
    """
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    from mmpretrain.registry import MODELS
    if 'data_preprocessor' in cfg:  # as the Runner does
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(cfg.model)
    if type(model).__name__ not in SUPPORTED:
        raise ValueError(f'{config}: model type {type(model).__name__!r} '
                         f'is none of {SUPPORTED}')
    load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device).eval(), cfg


def input_size(cfg: Config) -> Tuple[int, int]:
    """The ``(h, w)`` the config's backbone takes.

    Args:
        cfg (Config): The config.

    Returns:
        tuple[int, int]: ``model.backbone.img_size`` as a pair.
    """
    size = cfg.model.backbone.get('img_size', 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def dataset_images(cfg: Config, num_images: int,
                   size: Tuple[int, int]) -> Tuple[List[np.ndarray],
                                                   List[str]]:
    """The first images of the config's test (or validation) dataset.

    Args:
        cfg (Config): The config.
        num_images (int): How many.
        size (tuple[int, int]): ``(h, w)`` to resize them to.

    Returns:
        tuple[list[numpy.ndarray], list[str]]: RGB uint8 images and their
        files.
    """
    from mmpretrain.registry import DATASETS
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not loader:
        raise ValueError('the config has no test_dataloader or '
                         'val_dataloader: pass --images')
    dataset = DATASETS.build(loader.dataset)
    count = min(num_images, len(dataset))
    paths = [dataset.get_data_info(i)['img_path'] for i in range(count)]
    return load_images(paths, size), paths


def mae_reconstruction(model: nn.Module, inputs: torch.Tensor,
                       depth: int, seed: int
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EHM-MAE: masks at ``depth``, the images and per-image losses.

    Args:
        model (nn.Module): An ``EHMMAE``.
        inputs (torch.Tensor): ``[B, 3, H, W]`` normalised images.
        depth (int): Masking depth of every image (0: random masking).
        seed (int): Seed of the mask draws.

    Returns:
        tuple[Tensor, Tensor, Tensor]: Masks ``[B, gh, gw]`` (1 =
        masked), reconstructions ``[B, 3, H, W]`` (model space, visible
        patches from the input) and losses ``[B]``.
    """
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    result = model.generate_masks(
        inputs, 1.0, generator=generator, depth=[depth] * len(inputs))
    latent, mask, ids_restore = model.backbone(
        inputs, mask=result.mask, ids_restore=result.ids_restore,
        ids_keep=result.ids_keep)
    pred = model.neck(latent, ids_restore)  # [B, N, p * p * 3]
    head = model.head
    losses = per_image_losses(head, pred, inputs, mask)
    if head.norm_pix:  # the target was each patch, normalised
        patches = head.patchify(inputs)
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.e-6)**.5 + mean
    images = head.unpatchify(pred)
    mask = mask.view(-1, *model.grid_size)
    return mask, paste(images, inputs, mask), losses


def per_image_losses(head: nn.Module, pred: torch.Tensor,
                     inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The head's training loss of every image on its own.

    Args:
        head (nn.Module): The model's head (``loss(pred, target, mask)``).
        pred (torch.Tensor): The model's output for the batch.
        inputs (torch.Tensor): ``[B, 3, H, W]`` normalised images.
        mask (torch.Tensor): The batch's mask, as the head takes it.

    Returns:
        torch.Tensor: ``[B]`` losses.
    """
    return torch.stack([
        head.loss(pred[i:i + 1], inputs[i:i + 1], mask[i:i + 1])
        for i in range(len(inputs))
    ])


def feature_map(outs, token_grid: Tuple[int, int]) -> torch.Tensor:
    """The deepest encoder output as a feature map ``[B, C, h, w]``.

    Args:
        outs (Tensor | Sequence[Tensor]): The backbone's output: ViT tokens
            ``[B, extra + h * w, C]`` or feature maps.
        token_grid (tuple[int, int]): ``(h, w)`` of the ViT tokens.

    Returns:
        torch.Tensor: ``[B, C, h, w]``.
    """
    out = outs if isinstance(outs, torch.Tensor) else outs[-1]
    if out.dim() == 3:
        num = token_grid[0] * token_grid[1]
        out = out[:, out.shape[1] - num:].transpose(1, 2)
        out = out.reshape(out.shape[0], -1, *token_grid)
    return out


def simmim_reconstruction(model: nn.Module, inputs: torch.Tensor,
                          depth: int, seed: int
                          ) -> Tuple[torch.Tensor, torch.Tensor,
                                     torch.Tensor]:
    """EHM-SimMIM: as :func:`mae_reconstruction` on the mask grid.

    Args:
        model (nn.Module): An ``EHMSimMIM``.
        inputs (torch.Tensor): ``[B, 3, H, W]`` normalised images.
        depth (int): Masking depth of every image (0: random masking).
        seed (int): Seed of the mask draws.

    Returns:
        tuple[Tensor, Tensor, Tensor]: Masks ``[B, gh, gw]`` on the mask
        grid, reconstructions ``[B, 3, H, W]`` and losses ``[B]``.
    """
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    result = model.generate_masks(
        inputs, 1.0, generator=generator, depth=[depth] * len(inputs))
    token_mask = model.token_mask(result)
    if model.backbone_kind == 'vit':  # a ViT takes the mask flattened
        latent = model.backbone(inputs, token_mask.flatten(1))
    else:
        latent = model.backbone(inputs, token_mask)
    images = model.neck(feature_map(latent, model.token_grid))
    losses = per_image_losses(model.head, images, inputs, token_mask)
    mask = result.mask.view(-1, *model.mask_grid)
    return mask, paste(images, inputs, mask), losses


def paste(images: torch.Tensor, inputs: torch.Tensor,
          mask: torch.Tensor) -> torch.Tensor:
    """The model's pixels where the mask is set, the input elsewhere.

    Args:
        images (torch.Tensor): ``[B, 3, H, W]`` model output.
        inputs (torch.Tensor): ``[B, 3, H, W]`` inputs.
        mask (torch.Tensor): ``[B, gh, gw]``, nonzero = masked.

    Returns:
        torch.Tensor: ``[B, 3, H, W]``.
    """
    scale = (inputs.shape[2] // mask.shape[1],
             inputs.shape[3] // mask.shape[2])
    pixels = mask.float().repeat_interleave(scale[0], 1).repeat_interleave(
        scale[1], 2).unsqueeze(1)
    return images * pixels + inputs * (1 - pixels)


def reconstruct(model: nn.Module, inputs: torch.Tensor, depth: int,
                seed: int) -> Dict[str, object]:
    """Masks, reconstructions and losses of one depth, as numpy / floats.

    Args:
        model (nn.Module): An ``EHMMAE`` or ``EHMSimMIM``.
        inputs (torch.Tensor): ``[B, 3, H, W]`` normalised images.
        depth (int): Masking depth (0: random masking).
        seed (int): Seed of the mask draws.

    Returns:
        dict: ``masks`` (list of ``[gh, gw]`` arrays), ``images`` (list of
        RGB uint8 arrays) and ``losses`` (list of floats).
    """
    run = mae_reconstruction if type(model).__name__ == 'EHMMAE' \
        else simmim_reconstruction
    with torch.no_grad():
        mask, images, losses = run(model, inputs, depth, seed)
    return dict(
        masks=list(mask.cpu().numpy()),
        images=to_images(model, images),
        losses=[float(x) for x in losses.cpu()])


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Write the grid; print and return what it shows.

    Args:
        argv (Sequence[str], optional): Arguments; None reads
            ``sys.argv``. Defaults to None.

    Returns:
        dict: ``out`` (the PNG), ``depth``, ``images`` (their files),
        ``ehm_losses`` and ``random_losses``.
    """
    args = parse_args(argv)
    model, cfg = build_model(args.config, args.checkpoint, args.device,
                             args.cfg_options)
    size = input_size(cfg)
    if args.images:
        paths, images = args.images, load_images(args.images, size)
    else:
        images, paths = dataset_images(cfg, args.num_images, size)
    depth = args.depth
    if depth is None:
        depth = int(round(float(model.masking.depth_at(1.0))))
    if depth < 0:
        raise ValueError(f'--depth must be >= 0, got {depth}')
    inputs = to_inputs(model, images, args.device)
    ehm = reconstruct(model, inputs, depth, args.seed)
    rand = reconstruct(model, inputs, 0, args.seed)
    rows = []
    for i, (path, image) in enumerate(zip(paths, images)):
        rows.append(
            reconstruction_row(
                image,
                [(f'EHM mask, depth {depth}', ehm['masks'][i]),
                 ('random mask', rand['masks'][i])],
                [(ehm['losses'][i], ehm['images'][i]),
                 (rand['losses'][i], rand['images'][i])],
                min_size=args.panel_size))
        print(f'{path}: loss {ehm["losses"][i]:.4f} with the EHM mask '
              f'(depth {depth}), {rand["losses"][i]:.4f} with a random mask')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    Image.fromarray(stack_rows(rows)).save(args.out)
    print(f'-> {args.out}')
    return dict(out=args.out, depth=depth, images=list(paths),
                ehm_losses=ehm['losses'], random_losses=rand['losses'])


if __name__ == '__main__':
    main()
