# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""What the tree builder does to an affinity first: statistics and scaling.

Per image, no host read: the finiteness, mean and spread of the
off-diagonal affinities (the tolerance and the tie jitter are measured in
them), and the optional rescaling ``affinity_norm`` (design section 6) for
affinities whose raw values mislead: degree normalisation or the cosine of
the attention profiles (:func:`normalize_affinity`).
"""
from typing import Tuple

import torch
from torch import Tensor

AFFINITY_NORMS = ('none', 'degree', 'profile', 'centered_profile')


def offdiagonal_moments(affinity: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Finiteness, mean and spread of each image's off-diagonal affinities.

    Two reductions over the affinity, no elementwise temporaries, no host
    read.

    Args:
        affinity (Tensor): ``[B, N, N]`` float32.

    Returns:
        Tuple[Tensor, Tensor, Tensor]: ``finite`` ``[B]`` bool (False where
        the affinity holds NaN or inf, or overflows float32 when summed),
        ``mean`` and ``std`` ``[B]`` float32, the mean and standard
        deviation of the off-diagonal entries (both 0 when ``N < 2``).
    """
    num = affinity.shape[1]
    total = affinity.sum((1, 2)).double()  # [B]
    total_sq = torch.linalg.vector_norm(affinity.flatten(1),
                                        dim=1).double().square()  # [B]
    finite = torch.isfinite(total) & torch.isfinite(total_sq)
    count = num * num - num
    if count < 2:
        zeros = affinity.new_zeros(affinity.shape[0])
        return finite, zeros, zeros
    diag = affinity.diagonal(dim1=1, dim2=2).double()  # [B, N]
    mean = (total - diag.sum(1)) / count
    var = (total_sq - diag.square().sum(1)) / count - mean.square()
    std = (var.clamp(min=0) * count / (count - 1)).sqrt()
    return finite, mean.float(), std.float()


def offdiagonal_stats(affinity: Tensor) -> Tuple[Tensor, Tensor]:
    """Finiteness and spread of each image's off-diagonal affinities.

    :func:`offdiagonal_moments` without the mean.

    Args:
        affinity (Tensor): ``[B, N, N]`` float32.

    Returns:
        Tuple[Tensor, Tensor]: ``finite`` ``[B]`` bool (False where the
        affinity holds NaN or inf, or overflows float32 when summed) and
        ``std`` ``[B]`` float32, the standard deviation of the off-diagonal
        entries (0 when ``N < 2``).
    """
    finite, _, std = offdiagonal_moments(affinity)
    return finite, std


# --------------------------------------------------------------------------
# Affinity normalisation (before the tree; static shapes, no host read)
# --------------------------------------------------------------------------
def _negative_shift(affinity: Tensor) -> Tensor:
    """``[B, 1, 1]``: an image's most negative entry, or 0 if there is none.

    Subtracting it makes the affinity non-negative; non-negative images
    (attention) get 0, i.e. are used as they are.
    """
    return affinity.amin((1, 2), keepdim=True).clamp(max=0)


def normalize_affinity(affinity: Tensor, mode: str = 'none') -> Tensor:
    """Rescale a patch affinity so that no token dominates by its scale.

    ``S`` below is the affinity made non-negative: an image with negative
    entries (e.g. the negative squared distances of the pipeline's cue
    affinity) is shifted up by its most negative entry; non-negative
    affinities such as attention are used as they are.

    * ``'none'``: the affinity itself (the same tensor, not shifted).
    * ``'degree'``: ``D^-1/2 S D^-1/2``, ``D`` the row sums of the
      symmetrised off-diagonal affinity, ``d_i = sum_{j != i} (S_ij +
      S_ji) / 2``; the diagonal is set to 0 (the tree never uses it). A
      token that every other token likes (an attention sink) has a large
      degree, so its affinities shrink by ``1 / sqrt(d_sink)``. Degrees
      below a floor (``1e-6`` of the image's mean degree, at least the
      smallest normal float32) are raised to it.
    * ``'profile'``: the cosine similarity of the tokens' affinity
      profiles, the rows of ``S`` (diagonal included): two tokens are
      similar when they attend to, and are attended by, the same tokens
      (for a symmetric affinity such as :func:`attention_affinity`'s). A
      sink is in every profile, so it adds to every pair alike, while its
      own profile (liked by all) resembles none.
    * ``'centered_profile'``: the same after subtracting the image's mean
      profile from every profile, so that what all tokens share (a sink's
      column, a uniform floor) no longer makes every pair look alike.

    Like the affinity itself, the result is symmetrised by the tree
    (:func:`build_hierarchy` uses ``(W_ij + W_ji) / 2``); it is symmetric
    (up to rounding) when the affinity is. Float32, vectorised over the
    batch, no host read; a few elementwise passes over ``[B, N, N]``, and
    for the profiles one batched ``[N, N] x [N, N]`` product.

    Args:
        affinity (Tensor): float32 ``[B, N, N]``.
        mode (str): ``'none'``, ``'degree'``, ``'profile'`` or
            ``'centered_profile'``. Defaults to 'none'.

    Returns:
        Tensor: float32 ``[B, N, N]``.
    """
    if mode not in AFFINITY_NORMS:
        raise ValueError(f'affinity_norm must be one of {AFFINITY_NORMS}, '
                         f'got {mode!r}')
    if mode == 'none':
        return affinity
    if mode == 'centered_profile':  # a constant shift cancels here
        rows = affinity - affinity.mean(1, keepdim=True)  # - mean profile
    else:
        shift = _negative_shift(affinity)  # [B, 1, 1]
        rows = affinity - shift
    if mode == 'degree':
        # the row and column sums of S, less its diagonal, in two reductions
        diag = rows.diagonal(dim1=1, dim2=2)  # [B, N]
        degree = (rows.sum(2) + rows.sum(1)) / 2 - diag  # [B, N]
        floor = (degree.mean(1, keepdim=True) * 1e-6).clamp(
            min=torch.finfo(degree.dtype).tiny)  # [B, 1]
        scale = torch.maximum(degree, floor).rsqrt()  # [B, N]
        rows.mul_(scale[:, :, None]).mul_(scale[:, None, :])
        rows.diagonal(dim1=1, dim2=2).zero_()
        return rows
    norm = torch.linalg.vector_norm(rows, dim=2, keepdim=True)  # [B, N, 1]
    rows.div_(norm.clamp(min=torch.finfo(rows.dtype).tiny))
    return rows @ rows.transpose(1, 2)


def nonfinite_images(affinity: Tensor) -> Tensor:
    """Flag the images whose affinity holds NaN or inf (one host read).

    A per-image sum screens the batch (NaN and inf propagate); only when it
    is not finite are the entries checked one by one, so that a finite
    affinity whose sum overflows is not flagged.

    Args:
        affinity (Tensor): The affinity ``[B, N, N]``.

    Returns:
        Tensor: BoolTensor ``[B]``, True where an entry is not finite.
    """
    suspect = ~torch.isfinite(affinity.sum((1, 2)))
    if not bool(suspect.any()):
        return suspect
    return ~torch.isfinite(affinity).flatten(1).all(dim=1)


def _raise_if_not_finite(affinity: Tensor, finite: Tensor) -> None:
    """Raise a ValueError naming the bad images (host reads)."""
    if bool(finite.all()):
        return
    bad = nonfinite_images(affinity)
    if bool(bad.any()):
        raise ValueError('affinity holds NaN or inf for images '
                         f'{bad.nonzero().flatten().tolist()}')
    raise ValueError('affinity is too large: its sums overflow float32 for '
                     f'images {(~finite).nonzero().flatten().tolist()}; '
                     'rescale it')
