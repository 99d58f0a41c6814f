# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Images in and out of a model, and the rows of a reconstruction grid.

``tools/visualize_reconstruction.py`` draws, per image, a row of five
panels: input | EHM mask | reconstruction | random (MAE) mask |
reconstruction, each reconstruction titled with its loss.
"""
from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from .hierarchy_drawing import draw_mask, put_title, side_by_side

#: mmpretrain's ImageNet normalisation (RGB), used for models without a
#: data preprocessor.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def load_images(paths: Sequence[str],
                size: Tuple[int, int]) -> List[np.ndarray]:
    """Read images as RGB uint8 arrays resized (bicubic) to ``size``.

    Args:
        paths (Sequence[str]): Image files.
        size (tuple[int, int]): Output ``(h, w)``.

    Returns:
        list[numpy.ndarray]: ``[h, w, 3]`` uint8 RGB images.

    Raises:
        FileNotFoundError: Naming a path that is no file.
    """
    images = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert('RGB').resize((size[1], size[0]),
                                                Image.BICUBIC)
                images.append(np.asarray(img))
        except (FileNotFoundError, IsADirectoryError) as error:
            raise FileNotFoundError(f'image {path} does not exist') from error
    return images


def normalisation(model: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """The RGB mean and std of the model's data preprocessor.

    Args:
        model (nn.Module): The model; ImageNet's values when it has no
            ``data_preprocessor`` with ``mean`` and ``std``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``[1, 3, 1, 1]`` mean and std
        on the CPU.
    """
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None)
    std = getattr(preprocessor, 'std', None)
    if mean is None or std is None:
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (mean.detach().float().view(1, -1, 1, 1).cpu(),
            std.detach().float().view(1, -1, 1, 1).cpu())


def to_inputs(model: nn.Module, images: Sequence[np.ndarray],
              device: str) -> torch.Tensor:
    """Normalise RGB images the way the model's data preprocessor does.

    Args:
        model (nn.Module): The model (see :func:`normalisation`).
        images (Sequence[numpy.ndarray]): ``[h, w, 3]`` uint8 RGB images
            of one size.
        device (str): Device of the result.

    Returns:
        torch.Tensor: ``[B, 3, h, w]`` float inputs.
    """
    rgb = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    mean, std = normalisation(model)
    return ((rgb - mean) / std).to(device)


def to_images(model: nn.Module, inputs: torch.Tensor) -> List[np.ndarray]:
    """De-normalise model-space images back to RGB uint8.

    Args:
        model (nn.Module): The model (see :func:`normalisation`).
        inputs (torch.Tensor): ``[B, 3, h, w]`` normalised images.

    Returns:
        list[numpy.ndarray]: ``[h, w, 3]`` uint8 RGB images (clipped).
    """
    mean, std = normalisation(model)
    rgb = inputs.detach().float().cpu() * std + mean
    rgb = rgb.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return list(rgb.numpy())


def enlarge(image: np.ndarray, min_size: int) -> np.ndarray:
    """Enlarge an image (nearest neighbour) to at least ``min_size`` high.

    Args:
        image (numpy.ndarray): ``[h, w, 3]`` uint8 image.
        min_size (int): The smallest height wanted.

    Returns:
        numpy.ndarray: The image, repeated an integer number of times.
    """
    factor = max(1, -(-min_size // image.shape[0]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def reconstruction_row(image: np.ndarray,
                       masks: Sequence[Tuple[str, np.ndarray]],
                       reconstructions: Sequence[Tuple[float, np.ndarray]],
                       min_size: int = 128) -> np.ndarray:
    """One image's row: the input, then each mask and its reconstruction.

    Args:
        image (numpy.ndarray): ``[h, w, 3]`` uint8 RGB input.
        masks (Sequence[tuple[str, numpy.ndarray]]): ``(title, [gh, gw]
            mask)`` pairs, nonzero = masked (greyed in the panel).
        reconstructions (Sequence[tuple[float, numpy.ndarray]]): For each
            mask, ``(loss, [h, w, 3] uint8 image)``: the model's output for
            the masked patches pasted over the visible input, titled with
            the loss.
        min_size (int): Panels are enlarged (nearest neighbour) to at
            least this height. Defaults to 128.

    Returns:
        numpy.ndarray: ``[H, 5 W + gaps, 3]`` uint8 for two masks.

    Raises:
        ValueError: When the masks and reconstructions differ in number.
    """
    if len(masks) != len(reconstructions):
        raise ValueError(f'{len(masks)} masks but {len(reconstructions)} '
                         'reconstructions')
    big = enlarge(image, min_size)
    panels = [put_title(big, 'input')]
    for (title, mask), (loss, recon) in zip(masks, reconstructions):
        panels.append(put_title(draw_mask(big, mask), title))
        panels.append(
            put_title(enlarge(recon, min_size), f'recon, loss {loss:.3f}'))
    return side_by_side(panels)
