# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""ColorMAE-style noise masks: exact ratio, image-blind, the intended band."""
import pytest
import torch
from mmpretrain.registry import MODELS

from ehm_mm.models.masking import ColorNoiseMasking, Hierarchy
from ehm_mm.models.masking.color_noise_masking import color_filter

SIZE = 32  # a grid large enough to resolve the spectrum
FREQ = torch.fft.fftfreq(SIZE)
RADIUS = (FREQ[:, None]**2 + FREQ[None, :]**2).sqrt()  # cycles per patch
BANDS = dict(low=(RADIUS > 0) & (RADIUS < 0.1),
             mid=(RADIUS >= 0.15) & (RADIUS <= 0.3), high=RADIUS > 0.35)


def _power(field: torch.Tensor) -> torch.Tensor:
    """Mean periodogram ``[h, w]`` of fields ``[B, h, w]``."""
    field = field - field.mean((1, 2), keepdim=True)
    return torch.fft.fft2(field).abs().pow(2).mean(0)


def _band_shares(power: torch.Tensor) -> dict:
    return {name: float(power[band].sum() / power.sum())
            for name, band in BANDS.items()}


def _radial_peak(power: torch.Tensor) -> float:
    """The radial frequency (cycles per patch) of the most power."""
    bins = torch.round(RADIUS * SIZE).long().flatten()
    profile = torch.zeros(int(bins.max()) + 1).scatter_add_(
        0, bins, power.flatten()) / torch.bincount(bins).float()
    return (int(profile[1:].argmax()) + 1) / SIZE


@pytest.mark.parametrize('grid,ratio', [((8, 8), 0.75), ((14, 14), 0.75),
                                        ((5, 7), 0.4), ((2, 3), 0.5)])
@pytest.mark.parametrize('color', ['green', 'red', 'blue'])
def test_exact_ratio_for_every_image(grid, ratio, color):
    masking = MODELS.build(dict(type='ColorNoiseMasking', grid_size=grid,
                                mask_ratio=ratio, color=color))
    assert masking.requires_affinity is False
    num = grid[0] * grid[1]
    num_mask = int(round(ratio * num))
    out = masking(None, batch_size=64,
                  generator=torch.Generator().manual_seed(0))
    assert out.mask.shape == (64, num)
    assert bool((out.mask.sum(1) == num_mask).all())
    visible = torch.zeros(64, num).scatter_(1, out.ids_keep, 1.)
    assert torch.equal(visible, 1 - out.mask)
    assert torch.equal(torch.argsort(out.ids_restore, 1)[:, :num - num_mask],
                       out.ids_keep)
    assert out.depth.tolist() == [0] * 64 and out.node_size is None
    assert out.hierarchy.num_levels == 1


def test_the_masks_are_the_lowest_values_of_the_field():
    masking = ColorNoiseMasking((8, 8))
    out = masking(None, batch_size=16,
                  generator=torch.Generator().manual_seed(4))
    field = masking.noise_field(
        16, generator=torch.Generator().manual_seed(4)).flatten(1)
    highest_masked = field.masked_fill(out.mask == 0, -float('inf')).amax(1)
    lowest_visible = field.masked_fill(out.mask == 1, float('inf')).amin(1)
    assert bool((highest_masked < lowest_visible).all())  # ColorMAE keeps
    # the strongest values visible


def test_the_masks_ignore_the_image():
    masking = ColorNoiseMasking((8, 8))

    def masks(affinity=None, **kwargs):
        return masking(affinity, generator=torch.Generator().manual_seed(9),
                       **kwargs).mask

    reference = masks(batch_size=6)
    for affinity in (torch.randn(6, 64, 64), torch.zeros(6, 64, 64),
                     torch.full((6, 64, 64), float('nan'))):
        assert torch.equal(masks(affinity), reference)
    assert torch.equal(masks(depth=[3] * 6), reference)
    assert torch.equal(masks(batch_size=6, progress=0.9), reference)
    # different draws, different masks
    other = masking(None, batch_size=6,
                    generator=torch.Generator().manual_seed(10)).mask
    assert not torch.equal(other, reference)
    # no tree: the leaves
    tree = masking.hierarchy(batch_size=6)
    leaves = Hierarchy.leaves(6, (8, 8))
    assert torch.equal(tree.ancestors, leaves.ancestors)


def test_the_filtered_noise_has_the_intended_band():
    white = _band_shares(_power(torch.randn(
        512, SIZE, SIZE, generator=torch.Generator().manual_seed(0))))
    shares, peaks = {}, {}
    for color in ('green', 'red', 'blue'):
        masking = ColorNoiseMasking((SIZE, SIZE), color=color)
        power = _power(masking.noise_field(
            512, generator=torch.Generator().manual_seed(0)))
        shares[color], peaks[color] = _band_shares(power), _radial_peak(power)
    # green (band-pass): the mid band holds more than twice white noise's
    # share of the power, both other bands less than white noise's
    assert shares['green']['mid'] > 2 * white['mid']
    assert shares['green']['low'] < white['low']
    assert shares['green']['high'] < 0.5 * white['high']
    # the band of fine_sigma=0.7, sigma=1.4 peaks near 0.22 cycles/patch
    assert peaks['green'] == pytest.approx(0.22, abs=0.04)
    # red (low-pass) and blue (high-pass)
    assert shares['red']['low'] > 10 * white['low']
    assert shares['red']['high'] < 0.05 * white['high']
    assert shares['blue']['high'] > white['high']
    assert shares['blue']['low'] < 0.2 * white['low']
    assert peaks['red'] < 0.1 < 0.35 < peaks['blue']


def test_filters_and_options():
    # green is the difference of a narrow and a wide normalised Gaussian:
    # no DC gain (a band-pass), blue too (a high-pass), red passes DC
    assert float(color_filter('green', 1.4, 0.7).sum()) == pytest.approx(
        0., abs=1e-6)
    assert float(color_filter('blue', 1.4, 0.7).sum()) == pytest.approx(
        0., abs=1e-6)
    assert float(color_filter('red', 1.4, 0.7).sum()) == pytest.approx(1.)
    masking = ColorNoiseMasking((8, 8), sigma=2.0, fine_sigma=1.0)
    assert masking.kernel.shape == (13, 13) and masking.radius == 6
    assert 'kernel' not in masking.state_dict()  # checkpoint keys unchanged
    assert "color='green'" in repr(masking)
    for bad, match in ((dict(color='purple'), 'color'),
                       (dict(sigma=0.), 'sigma'),
                       (dict(sigma=float('inf')), 'sigma'),
                       (dict(fine_sigma=-1.), 'fine_sigma'),
                       (dict(sigma=1.0, fine_sigma=1.0), 'fine_sigma'),
                       (dict(mask_ratio=1.0), 'mask_ratio')):
        with pytest.raises(ValueError, match=match):
            ColorNoiseMasking((8, 8), **bad)
    # red and blue ignore fine_sigma
    ColorNoiseMasking((8, 8), color='red', sigma=1.0, fine_sigma=2.0)
