# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Global descriptors from ViT tokens: CLS, mean and GeM pooling."""
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

POOLING_METHODS = ('cls', 'avg', 'gem')


def parse_pooling(pooling: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    """Normalise a pooling spec into a tuple of method names.

    Args:
        pooling (str | Sequence[str]): One method or several, concatenated in
            the given order: ``'cls'``, ``'avg'``, ``'gem'``. A string may
            join several with ``'+'`` (e.g. ``'cls+gem'``).

    Returns:
        tuple[str]: The method names.
    """
    if isinstance(pooling, str):
        methods = tuple(pooling.split('+'))
    else:
        methods = tuple(pooling)
    if not methods:
        raise ValueError('pooling must name at least one method')
    for method in methods:
        if method not in POOLING_METHODS:
            raise ValueError(f'unknown pooling {method!r}; choose from '
                             f'{POOLING_METHODS}')
    if len(set(methods)) != len(methods):
        raise ValueError(f'pooling lists a method twice: {methods}')
    return methods


def gem_pool(patch_tokens: Tensor, p: float = 3.0,
             eps: float = 1e-6) -> Tensor:
    """Generalised-mean pooling over tokens.

    ``(mean_i max(x_i, eps) ** p) ** (1 / p)`` per channel (Radenovic et al.,
    TPAMI 2018). ViT tokens can be negative, so they are clamped at ``eps``
    first (as DINO's copy-detection code does).

    Args:
        patch_tokens (Tensor): Tokens of shape (B, N, C).
        p (float): The exponent; 1 is mean pooling of the clamped tokens.
            Defaults to 3.0.
        eps (float): Clamp floor. Defaults to 1e-6.

    Returns:
        Tensor: Descriptors of shape (B, C).
    """
    if p <= 0:
        raise ValueError(f'GeM exponent p must be > 0, got {p}')
    clamped = patch_tokens.clamp(min=eps)
    return clamped.pow(p).mean(dim=1).pow(1.0 / p)


def pool_tokens(tokens: Tensor,
                methods: Sequence[str],
                num_extra_tokens: int = 1,
                gem_p: float = 3.0) -> Tensor:
    """Pool ViT output tokens into one (unnormalised) global descriptor.

    Args:
        tokens (Tensor): All output tokens of shape (B, E + N, C), the
            ``E = num_extra_tokens`` extra tokens (CLS first) in front.
        methods (Sequence[str]): Pooling methods, concatenated in order:
            ``'cls'`` (the CLS token), ``'avg'`` (mean of patch tokens),
            ``'gem'`` (GeM of patch tokens).
        num_extra_tokens (int): Leading non-patch tokens. Defaults to 1.
        gem_p (float): GeM exponent. Defaults to 3.0.

    Returns:
        Tensor: Descriptors of shape (B, len(methods) * C).
    """
    if tokens.dim() != 3:
        raise ValueError('tokens must have shape (B, tokens, C), got '
                         f'{tuple(tokens.shape)}')
    if tokens.size(1) <= num_extra_tokens:
        raise ValueError(f'{tokens.size(1)} tokens leave no patch token '
                         f'after {num_extra_tokens} extra tokens')
    patch_tokens = tokens[:, num_extra_tokens:]
    parts = []
    for method in methods:
        if method == 'cls':
            if num_extra_tokens < 1:
                raise ValueError("pooling 'cls' needs a CLS token")
            parts.append(tokens[:, 0])
        elif method == 'avg':
            parts.append(patch_tokens.mean(dim=1))
        elif method == 'gem':
            parts.append(gem_pool(patch_tokens, gem_p))
        else:
            raise ValueError(f'unknown pooling {method!r}; choose from '
                             f'{POOLING_METHODS}')
    return torch.cat(parts, dim=1)
