# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The masking depth over training: the schedule and its rounding.

Design section 3: ``d(t)`` of a :class:`DepthSchedule` at training progress
``t``, rounded per image to ``floor(d)`` or ``floor(d) + 1``, unbiased
(:func:`stochastic_round` on the device, :func:`stochastic_round_host` on
the host).
"""
import math
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

SCHEDULES = ('linear', 'cosine', 'sqrt', 'step', 'constant')

_SHAPES: Dict[str, Callable[[float, int], float]] = dict(
    linear=lambda t, steps: t,
    cosine=lambda t, steps: (1.0 - math.cos(math.pi * t)) / 2.0,
    sqrt=lambda t, steps: math.sqrt(t),
    step=lambda t, steps: min(math.floor(t * steps), steps - 1) / (steps - 1),
    constant=lambda t, steps: 1.0)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
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
        schedule (str): One of :data:`SCHEDULES`. Defaults to 'linear'.
        num_steps (int, optional): Stages of the ``'step'`` schedule; None
            means one stage per integer depth,
            ``max(2, ceil(|d_max - d_min|) + 1)``. Defaults to None.
    """

    d_min: float = 0.
    d_max: float = 5.
    schedule: str = 'linear'
    num_steps: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ('d_min', 'd_max'):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value < math.inf:
                raise ValueError(
                    f'{name} must be a finite number >= 0, got {value!r}')
            object.__setattr__(self, name, float(value))
        if self.schedule not in _SHAPES:
            raise ValueError(f'schedule must be one of {SCHEDULES}, '
                             f'got {self.schedule!r}')
        steps = self.num_steps
        if steps is None:
            steps = max(2, math.ceil(abs(self.d_max - self.d_min)) + 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f'num_steps must be an int >= 2, got {steps!r}')
        object.__setattr__(self, 'num_steps', steps)

    @property
    def max_depth(self) -> int:
        """int: The deepest integer depth stochastic rounding can draw."""
        if self.schedule == 'constant':
            return math.ceil(self.d_max)
        return math.ceil(max(self.d_min, self.d_max))

    @property
    def deepest_end(self) -> str:
        """str: ``'d_min'`` or ``'d_max'``, whichever reaches max_depth."""
        return ('d_min' if self.d_min > self.d_max
                and self.schedule != 'constant' else 'd_max')

    def __call__(self, progress: float) -> float:
        """Return the continuous depth ``d(t)``.

        Args:
            progress (float): Training progress ``t`` in ``[0, 1]``.

        Returns:
            float: The depth.
        """
        if not _is_number(progress) or not 0.0 <= progress <= 1.0:
            raise ValueError(
                f'progress must be a number in [0, 1], got {progress!r}')
        shape = _SHAPES[self.schedule](float(progress), self.num_steps)
        if shape == 1.0:  # exact end point, no rounding error
            return self.d_max
        return self.d_min + (self.d_max - self.d_min) * shape


def _check_depth(depth: float) -> Tuple[int, float]:
    if not math.isfinite(depth) or depth < 0:
        raise ValueError(f'depth must be finite and >= 0, got {depth!r}')
    base = math.floor(depth)
    return base, depth - base


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
    base, frac = _check_depth(depth)
    out = torch.full((batch_size, ), base, dtype=torch.long, device=device)
    if frac > 0:
        draw = torch.rand(batch_size, device=device, generator=generator)
        out += (draw < frac).long()
    return out


def stochastic_round_host(depth: float, batch_size: int,
                          rng: random.Random) -> List[int]:
    """:func:`stochastic_round` on the host, from a Python random source.

    The depths are known to Python without reading a device, so a caller
    can build only the levels they use, or skip the tree when all are 0.

    Args:
        depth (float): The continuous depth ``d >= 0``.
        batch_size (int): Number of images ``B``.
        rng (random.Random): Random source (``B`` draws unless ``d`` is an
            integer).

    Returns:
        List[int]: ``B`` depths.
    """
    base, frac = _check_depth(depth)
    if frac == 0:
        return [base] * batch_size
    return [base + (rng.random() < frac) for _ in range(batch_size)]
