# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Evolved masking depth: how deep in the tree masks are cut over training.

Torch only. ``d(t) = d_min + (d_max - d_min) * s(t)`` for training progress
``t`` in ``[0, 1]`` (design section 3, this project's reconstruction of the
paper's epoch-driven depth), and per-image stochastic rounding of ``d(t)``.
"""
import math
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

SCHEDULES = ('linear', 'cosine', 'sqrt', 'step', 'constant')


def _linear(t: float, steps: int) -> float:
    return t


def _cosine(t: float, steps: int) -> float:
    return (1.0 - math.cos(math.pi * t)) / 2.0


def _sqrt(t: float, steps: int) -> float:
    return math.sqrt(t)


def _step(t: float, steps: int) -> float:
    return min(math.floor(t * steps), steps - 1) / (steps - 1)


def _constant(t: float, steps: int) -> float:
    return 1.0


_SHAPES: Dict[str, Callable[[float, int], float]] = dict(
    linear=_linear, cosine=_cosine, sqrt=_sqrt, step=_step,
    constant=_constant)


class DepthSchedule:
    """Masking depth as a function of training progress.

    ``d(t) = d_min + (d_max - d_min) * s(t)`` with ``s`` one of

    * ``'linear'``: ``s(t) = t``;
    * ``'cosine'``: ``s(t) = (1 - cos(pi t)) / 2``, slow at both ends;
    * ``'sqrt'``: ``s(t) = sqrt(t)``, deep early;
    * ``'step'``: ``num_steps`` equal stages, ``s`` goes from 0 to 1 in
      equal jumps (stage ``k`` of ``n`` has ``s = k / (n - 1)``);
    * ``'constant'``: ``s(t) = 1``, i.e. always ``d_max`` (``d_min`` is
      unused).

    All of them are monotone and all but ``'constant'`` give
    ``d(0) = d_min`` and ``d(1) = d_max`` exactly. ``d_min > d_max`` gives
    a decreasing schedule.

    Args:
        d_min (float): Depth at the start of training (0 = patches, i.e.
            MAE random masking). Defaults to 0.
        d_max (float): Depth at the end of training. Defaults to 5.
        schedule (str): One of ``'linear'``, ``'cosine'``, ``'sqrt'``,
            ``'step'``, ``'constant'``. Defaults to 'linear'.
        num_steps (int, optional): Stages of the ``'step'`` schedule; None
            means one stage per integer depth,
            ``max(2, ceil(|d_max - d_min|) + 1)``. Defaults to None.
    """

    def __init__(self,
                 d_min: float = 0.,
                 d_max: float = 5.,
                 schedule: str = 'linear',
                 num_steps: Optional[int] = None) -> None:
        for name, value in (('d_min', d_min), ('d_max', d_max)):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < 0):
                raise ValueError(
                    f'{name} must be a finite number >= 0, got {value!r}')
        if schedule not in _SHAPES:
            raise ValueError(f'schedule must be one of {SCHEDULES}, '
                             f'got {schedule!r}')
        if num_steps is None:
            num_steps = max(2, math.ceil(abs(d_max - d_min)) + 1)
        if (isinstance(num_steps, bool) or not isinstance(num_steps, int)
                or num_steps < 2):
            raise ValueError(
                f'num_steps must be an int >= 2, got {num_steps!r}')
        self.d_min = float(d_min)
        self.d_max = float(d_max)
        self.schedule = schedule
        self.num_steps = num_steps

    @property
    def max_depth(self) -> int:
        """int: The deepest integer depth stochastic rounding can draw."""
        if self.schedule == 'constant':
            return math.ceil(self.d_max)
        return math.ceil(max(self.d_min, self.d_max))

    def __call__(self, progress: float) -> float:
        """Return the continuous depth ``d(t)``.

        Args:
            progress (float): Training progress ``t`` in ``[0, 1]``.

        Returns:
            float: The depth.
        """
        if (isinstance(progress, bool)
                or not isinstance(progress, (int, float))
                or not 0.0 <= progress <= 1.0):
            raise ValueError(
                f'progress must be a number in [0, 1], got {progress!r}')
        shape = _SHAPES[self.schedule](float(progress), self.num_steps)
        if shape == 1.0:  # exact end point, no rounding error
            return self.d_max
        return self.d_min + (self.d_max - self.d_min) * shape

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(d_min={self.d_min}, '
                f'd_max={self.d_max}, schedule={self.schedule!r}, '
                f'num_steps={self.num_steps})')


def stochastic_round(depth: float,
                     batch_size: int,
                     device: Optional[torch.device] = None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Round a continuous depth to an integer per image, unbiased.

    Image ``b`` gets ``floor(d) + 1`` with probability ``d - floor(d)``,
    else ``floor(d)``, so the batch mean estimates ``d``. An integer ``d``
    draws no random numbers.

    Args:
        depth (float): The continuous depth ``d >= 0``.
        batch_size (int): Number of images ``B``.
        device (torch.device, optional): Where to put the result.
            Defaults to None.
        generator (torch.Generator, optional): Random source; None uses the
            global one. Defaults to None.

    Returns:
        Tensor: LongTensor ``[B]``.
    """
    if not math.isfinite(depth) or depth < 0:
        raise ValueError(f'depth must be finite and >= 0, got {depth!r}')
    base = math.floor(depth)
    frac = depth - base
    out = torch.full((batch_size, ), base, dtype=torch.long, device=device)
    if frac > 0:
        draw = torch.rand(batch_size, device=device, generator=generator)
        out += (draw < frac).long()
    return out
