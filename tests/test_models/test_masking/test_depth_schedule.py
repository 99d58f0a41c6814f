# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of the evolved masking depth schedule."""
import math
import random

import pytest
import torch

from ehm_mm import DepthSchedule
from ehm_mm.models.masking.evolved_masking import (
    SCHEDULES,
    stochastic_round,
    stochastic_round_host,
)

PROGRESS = [i / 200 for i in range(201)]


@pytest.mark.parametrize('schedule', [s for s in SCHEDULES if s != 'constant'])
@pytest.mark.parametrize('d_min, d_max', [(0., 5.), (1., 3.5), (4., 0.)])
def test_end_points_are_exact_and_schedule_is_monotone(schedule, d_min, d_max):
    depth = DepthSchedule(d_min, d_max, schedule)
    assert depth(0) == d_min and depth(0.0) == d_min
    assert depth(1) == d_max and depth(1.0) == d_max
    values = [depth(t) for t in PROGRESS]
    sign = 1 if d_max >= d_min else -1
    assert all(sign * (b - a) >= 0 for a, b in zip(values, values[1:]))
    assert all(min(d_min, d_max) <= v <= max(d_min, d_max) for v in values)


def test_shapes_of_the_schedules():
    linear = DepthSchedule(0, 4, 'linear')
    cosine = DepthSchedule(0, 4, 'cosine')
    sqrt = DepthSchedule(0, 4, 'sqrt')
    assert linear(0.25) == pytest.approx(1.0)
    assert cosine(0.5) == pytest.approx(2.0)
    assert cosine(0.25) < linear(0.25) < sqrt(0.25)
    assert sqrt(0.25) == pytest.approx(2.0)
    step = DepthSchedule(0, 4, 'step')  # 5 stages: 0, 1, 2, 3, 4
    assert step.num_steps == 5
    assert [step(t) for t in (0.0, 0.19, 0.2, 0.5, 0.79, 0.8, 1.0)] == \
        [0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    assert DepthSchedule(0, 5, 'step', num_steps=2)(0.49) == 0.0
    constant = DepthSchedule(1, 3, 'constant')
    assert {constant(t) for t in PROGRESS} == {3.0}
    assert constant.max_depth == 3
    assert DepthSchedule(4, 1.5).max_depth == 4
    assert DepthSchedule(0, 2.5).max_depth == 3


@pytest.mark.parametrize('kwargs, match', [
    (dict(d_min=-1), 'd_min'),
    (dict(d_max=math.inf), 'd_max'),
    (dict(d_max='5'), 'd_max'),
    (dict(schedule='exp'), 'schedule'),
    (dict(schedule='step', num_steps=1), 'num_steps'),
])
def test_bad_schedule_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DepthSchedule(**kwargs)


@pytest.mark.parametrize('progress', [-0.01, 1.01, math.nan, '0.5', None])
def test_progress_outside_unit_interval_is_refused(progress):
    with pytest.raises(ValueError, match='progress'):
        DepthSchedule()(progress)


def test_stochastic_rounding_has_the_right_mean():
    gen = torch.Generator().manual_seed(0)
    depth = stochastic_round(2.3, 40000, generator=gen)
    assert set(depth.unique().tolist()) == {2, 3}
    # std of the mean: sqrt(0.3 * 0.7 / 40000) ~ 0.0023
    assert float(depth.float().mean()) == pytest.approx(2.3, abs=0.01)


def test_integer_depth_draws_no_random_numbers():
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    depth = stochastic_round(3.0, 8, generator=gen)
    assert depth.tolist() == [3] * 8 and depth.dtype == torch.long
    assert torch.equal(gen.get_state(), state)
    with pytest.raises(ValueError, match='depth'):
        stochastic_round(-0.5, 2)


def test_host_rounding_has_the_right_mean_and_is_seeded():
    depth = stochastic_round_host(2.3, 40000, random.Random(0))
    assert set(depth) == {2, 3}
    assert sum(depth) / len(depth) == pytest.approx(2.3, abs=0.01)
    assert depth == stochastic_round_host(2.3, 40000, random.Random(0))
    rng = random.Random(0)
    state = rng.getstate()
    assert stochastic_round_host(3.0, 4, rng) == [3] * 4
    assert rng.getstate() == state  # an integer depth draws nothing
    with pytest.raises(ValueError, match='depth'):
        stochastic_round_host(math.nan, 2, rng)
