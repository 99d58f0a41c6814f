# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""PCA whitening learned on a separate set of descriptors (torch only).

The learned map is ``x -> diag(eigval ** -power) @ V.T @ (x - mean)``, with
``V`` the eigenvectors of the covariance of the (centred) learning set,
sorted by decreasing eigenvalue and cut to ``dim`` components. ``power=0.5``
is full whitening (Jegou & Chum, ECCV 2012; the DINO copy-detection
protocol); ``power=0`` is plain PCA. Eigenvalues below ``eps_ratio`` times
the largest are raised to that floor so that near-null directions are not
blown up.
"""
from typing import Optional

import torch
from torch import Tensor


class PCAWhitening:
    """PCA whitening (optionally with dimensionality reduction).

    Args:
        dim (int, optional): Number of output dimensions; None keeps the
            input dimension. Defaults to None.
        power (float): Exponent applied to the eigenvalues: 0.5 whitens,
            0 only rotates (PCA). Defaults to 0.5.
        eps_ratio (float): Floor of the eigenvalues, relative to the
            largest. Defaults to 1e-5.

    Examples:
        >>> whitening = PCAWhitening(dim=64).fit(learning_features)
        >>> queries = whitening.transform(queries)
    """

    def __init__(self,
                 dim: Optional[int] = None,
                 power: float = 0.5,
                 eps_ratio: float = 1e-5) -> None:
        if dim is not None and dim < 1:
            raise ValueError(f'dim must be >= 1 or None, got {dim}')
        if power < 0:
            raise ValueError(f'power must be >= 0, got {power}')
        if eps_ratio <= 0:
            raise ValueError(f'eps_ratio must be > 0, got {eps_ratio}')
        self.dim = dim
        self.power = power
        self.eps_ratio = eps_ratio
        self.mean: Optional[Tensor] = None
        self.projection: Optional[Tensor] = None

    @property
    def fitted(self) -> bool:
        """bool: Whether :meth:`fit` has been called."""
        return self.projection is not None

    def fit(self, features: Tensor) -> 'PCAWhitening':
        """Learn the mean and projection from descriptors.

        Args:
            features (Tensor): Learning descriptors of shape (N, D), N >= 2.

        Returns:
            PCAWhitening: ``self``.
        """
        if features.dim() != 2:
            raise ValueError('whitening features must be 2-D (num, dim), '
                             f'got shape {tuple(features.shape)}')
        num, in_dim = features.shape
        if num < 2:
            raise ValueError('whitening needs at least 2 learning '
                             f'descriptors, got {num}')
        out_dim = in_dim if self.dim is None else self.dim
        if out_dim > in_dim:
            raise ValueError(f'whitening dim {out_dim} exceeds the feature '
                             f'dim {in_dim}')
        x = features.detach().to(torch.float64)
        mean = x.mean(dim=0)
        centred = x - mean
        covariance = centred.t() @ centred / num
        eigvals, eigvecs = torch.linalg.eigh(covariance)
        eigvals = eigvals.clamp(min=float(eigvals.max()) * self.eps_ratio)
        order = torch.argsort(eigvals, descending=True)[:out_dim]
        eigvals, eigvecs = eigvals[order], eigvecs[:, order]
        scale = eigvals.pow(-self.power)
        self.mean = mean.to(features.dtype)
        # (out_dim, in_dim)
        self.projection = (scale[:, None] * eigvecs.t()).to(features.dtype)
        return self

    def transform(self, features: Tensor) -> Tensor:
        """Apply the learned whitening.

        Args:
            features (Tensor): Descriptors of shape (M, D).

        Returns:
            Tensor: Whitened descriptors of shape (M, dim), not normalised.
        """
        if not self.fitted:
            raise RuntimeError('PCAWhitening.transform called before fit')
        if features.dim() != 2 or features.size(1) != self.mean.numel():
            raise ValueError(
                f'expected features of shape (M, {self.mean.numel()}), got '
                f'{tuple(features.shape)}')
        mean = self.mean.to(features)
        projection = self.projection.to(features)
        return (features - mean) @ projection.t()
