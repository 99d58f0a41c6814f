# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""ColorMAE-style masks: filtered random noise, thresholded per image.

Hinojosa et al., "ColorMAE: Exploring data-independent masking strategies
in Masked AutoEncoders" (ECCV 2024) make masks from white noise ``W``
filtered with Gaussian kernels ``G_s``: red (low-pass) ``G_s * W``, blue
(high-pass) ``W - G_s * W``, green (band-pass, their best) the difference
of a narrow and a wide blur, ``G_s1 * W - G_s2 * W``. A pattern is cropped
to the patch grid and the patches of its strongest values stay visible
(their release: precomputed patterns, random crops and flips, ``argsort``
descending). Here the noise is drawn per image on the device, on a canvas
``pad`` patches larger than the grid on every side, and filtered with one
``conv2d`` without padding: the same stationary field a crop of a larger
pattern gives, with no border effect. Every image masks exactly
``round(mask_ratio * N)`` patches, its lowest values.
"""
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor

from .hierarchy import Hierarchy
from .mask_source import MaskingResult, MaskSource, split_shuffle

NOISE_COLORS = ('red', 'green', 'blue')


def gaussian_kernel(sigma: float, radius: int) -> Tensor:
    """A normalised 2-D Gaussian on ``(2 * radius + 1)**2`` taps.

    Args:
        sigma (float): Standard deviation in patches, ``> 0``.
        radius (int): Taps on each side of the centre.

    Returns:
        Tensor: float32 ``[2r + 1, 2r + 1]``, summing to 1.
    """
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    line = torch.exp(-taps**2 / (2 * sigma**2))
    plane = line[:, None] * line[None, :]
    return (plane / plane.sum()).float()


def color_filter(color: str, sigma: float, fine_sigma: float) -> Tensor:
    """The ColorMAE filter of a noise colour as one 2-D kernel.

    Args:
        color (str): ``'red'`` (``G_sigma``), ``'blue'`` (``delta -
            G_sigma``) or ``'green'`` (``G_fine_sigma - G_sigma``).
        sigma (float): The wide blur's standard deviation, patches.
        fine_sigma (float): The narrow blur's (green only), patches.

    Returns:
        Tensor: float32 ``[k, k]``, ``k = 2 * ceil(3 * sigma) + 1``.
    """
    radius = math.ceil(3 * sigma)
    wide = gaussian_kernel(sigma, radius)
    if color == 'red':
        return wide
    if color == 'green':
        return gaussian_kernel(fine_sigma, radius) - wide
    delta = torch.zeros_like(wide)
    delta[radius, radius] = 1.
    return delta - wide


@MODELS.register_module()
class ColorNoiseMasking(MaskSource):
    """ColorMAE's data-independent masks: filtered noise, top-k per image.

    Per image: white Gaussian noise on an ``(h + 2r) x (w + 2r)`` canvas
    (``r = ceil(3 * sigma)``), filtered with :func:`color_filter` without
    padding to the ``h x w`` grid; the ``round(mask_ratio * N)`` patches of
    the lowest values are masked, the rest (the strongest values, as
    ColorMAE keeps) stay visible. Ranking per image makes ColorMAE's
    normalisation (zero mean, unit variance) and its random flips (the
    filtered noise is stationary and isotropic) unnecessary. The image is
    never read (``requires_affinity = False``); on the generator's device,
    static shapes, no host read.

    The masks are not made of nodes: :meth:`hierarchy` is
    :meth:`Hierarchy.leaves`, ``depth`` is 0 and ``node_size`` is None (not
    logged): the masked set is a level set of the field, and at ratio 0.75
    it is mostly one connected region. The scale of the pattern shows in
    the mean size of the visible regions (the mask's holes),
    :func:`~.mask_statistics.node_size_report`'s
    ``visible_region_size``.

    Defaults scaled to small grids (ColorMAE's patterns were made for
    14 x 14): green ``fine_sigma=0.7``, ``sigma=1.4`` patches pass a band
    peaking near 0.22 cycles per patch (a period of about 4.6 patches).

    Random draws from ``generator``: one ``torch.randn(B, 1, h + 2r,
    w + 2r)``.

    Args:
        grid_size (Sequence[int]): The patch grid ``(h, w)`` (the model
            fills it in).
        mask_ratio (float): Fraction of patches masked, in ``(0, 1)``.
            Defaults to 0.75.
        color (str): ``'green'`` (band-pass), ``'red'`` (low-pass) or
            ``'blue'`` (high-pass). Defaults to 'green'.
        sigma (float): The wide Gaussian's standard deviation in patches
            (red's blur, the blur blue and green subtract), ``> 0``.
            Defaults to 1.4.
        fine_sigma (float): Green's narrow Gaussian, in ``(0, sigma)``;
            unused by red and blue. Defaults to 0.7.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    requires_affinity = False

    def __init__(self,
                 grid_size: Sequence[int],
                 mask_ratio: float = 0.75,
                 color: str = 'green',
                 sigma: float = 1.4,
                 fine_sigma: float = 0.7,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(grid_size, mask_ratio, init_cfg)
        if color not in NOISE_COLORS:
            raise ValueError(
                f'color must be one of {NOISE_COLORS}, got {color!r}')
        for name, value in (('sigma', sigma), ('fine_sigma', fine_sigma)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not 0 < value < math.inf):
                raise ValueError(
                    f'{name} must be a positive finite number, got '
                    f'{value!r}')
        if color == 'green' and not fine_sigma < sigma:
            raise ValueError(
                f"color='green' passes the band between its blurs: "
                f'fine_sigma ({fine_sigma}) must be < sigma ({sigma})')
        self.color = color
        self.sigma = float(sigma)
        self.fine_sigma = float(fine_sigma)
        # not in the state dict: a model's checkpoint keys stay the same
        self.register_buffer(
            'kernel', color_filter(color, self.sigma, self.fine_sigma),
            persistent=False)

    @property
    def radius(self) -> int:
        """int: The filter's taps on each side, ``ceil(3 * sigma)``."""
        return self.kernel.shape[-1] // 2

    def noise_field(self,
                    batch_size: int,
                    device: Optional[torch.device] = None,
                    generator: Optional[torch.Generator] = None) -> Tensor:
        """The filtered noise on the grid, one field per image.

        Args:
            batch_size (int): ``B``.
            device (torch.device, optional): Defaults to None (CPU).
            generator (torch.Generator, optional): Random source.
                Defaults to None.

        Returns:
            Tensor: float32 ``[B, h, w]``.
        """
        (h, w), pad = self.grid_size, self.radius
        white = torch.randn(batch_size, 1, h + 2 * pad, w + 2 * pad,
                            device=device, generator=generator)
        kernel = self.kernel.to(device)[None, None]  # [1, 1, k, k]
        return F.conv2d(white, kernel).squeeze(1)  # [B, h, w]

    def hierarchy(self,
                  affinity: Optional[Tensor] = None,
                  batch_size: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> Hierarchy:
        """No tree: every patch its own node (:meth:`Hierarchy.leaves`).

        Arguments as :meth:`MaskSource.hierarchy` (an affinity gives only
        the batch size and device).

        Returns:
            Hierarchy: One level, ``[B, 1, N]``.
        """
        batch, device = self.batch_and_device(affinity, None, batch_size,
                                              generator)
        return Hierarchy.leaves(batch, self.grid_size, device)

    def make_masks(self, affinity: Optional[Tensor], batch: int,
                   device: torch.device, progress: Optional[float],
                   depth: Union[int, Sequence[int], Tensor, None],
                   generator: Optional[torch.Generator]) -> MaskingResult:
        """Noise masks for ``batch`` images (progress and depth unused).

        Returns:
            MaskingResult: ``mask``, ``ids_restore``, ``ids_keep``,
            ``depth`` (zeros) and ``hierarchy`` (the leaves).
        """
        field = self.noise_field(batch, device, generator).flatten(1)
        order = torch.argsort(field, dim=1, descending=True)  # [B, N]
        mask, ids_restore, ids_keep = split_shuffle(order, self.num_masked)
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        return MaskingResult(mask, ids_restore, ids_keep, zeros,
                             Hierarchy.leaves(batch, self.grid_size, device))

    def extra_repr(self) -> str:
        return (f'grid_size={self.grid_size}, mask_ratio={self.mask_ratio}, '
                f'color={self.color!r}, sigma={self.sigma}, '
                f'fine_sigma={self.fine_sigma}')
