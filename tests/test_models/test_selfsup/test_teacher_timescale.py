# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The EMA teacher's timescale: ``ema_half_life``, accumulation, distance."""
import copy
import math
import os.path as osp

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample
from runner_utils import runner_config, train_in_process
from tiny_models import TINY_EHM_MAE, build_tiny

import ehm_mm  # noqa: F401
from ehm_mm.models.selfsup.ema_teacher import half_life_momentum

MAE = dict(TINY_EHM_MAE, ema_momentum=None, ema_half_life=0.25)
SIMMIM = dict(
    type='EHMSimMIM',
    backbone=dict(
        type='MaskFeatViT',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=64),
        img_size=32, patch_size=8),
    neck=dict(type='SimMIMLinearDecoder', in_channels=32, encoder_stride=8),
    head=dict(type='SimMIMHead', patch_size=8,
              loss=dict(type='PixelReconstructionLoss', criterion='L1',
                        channel=3)),
    mask_patch_size=8,
    masking=dict(type='EvolvedHierarchicalMasking', mask_ratio=0.6,
                 d_max=2.0),
    ema_momentum=None,
    ema_half_life=0.25)


def _build(base: dict = MAE, **changes) -> torch.nn.Module:
    return build_tiny(base, **changes).train()


def _images(batch: int = 4, seed: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32,
                       generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def hub():
    hub = MessageHub.get_instance('test_teacher_timescale')
    hub.update_info('iter', 0)
    hub.update_info('max_iters', 40)
    yield hub
    MessageHub._instance_dict.pop('test_teacher_timescale')


def _student_params(model) -> dict:
    return {k: v.detach().clone()
            for k, v in model.backbone.named_parameters()}


def test_half_life_momentum():
    assert half_life_momentum(0.5, 2) == 0.5  # one iteration: halfway
    for half_life, max_iters in ((0.1, 160), (0.25, 40), (0.05, 375_000)):
        momentum = half_life_momentum(half_life, max_iters)
        assert (1 - momentum)**(half_life * max_iters) == pytest.approx(0.5)
    # the demo's ema_momentum=0.01 over 160 iterations, as a fraction
    demo = math.log(2) / -math.log1p(-0.01) / 160
    assert demo == pytest.approx(0.43105, abs=1e-5)
    assert half_life_momentum(demo, 160) == pytest.approx(0.01)
    with pytest.raises(ValueError, match='at least one iteration'):
        half_life_momentum(0.01, 50)


@pytest.mark.parametrize('changes, match', [
    (dict(ema_momentum=1e-3), 'give one'),
    (dict(ema_half_life=None), 'needs ema_momentum .* or ema_half_life'),
    (dict(ema_half_life=0.), r'ema_half_life is a fraction .* \(0, 1\]'),
    (dict(ema_half_life=1.5), r'ema_half_life is a fraction'),
    (dict(ema_half_life=-0.1), r'ema_half_life is a fraction'),
    (dict(ema_half_life=True), r'ema_half_life is a fraction'),
    (dict(ema_half_life='0.1'), r'ema_half_life is a fraction'),
])
def test_timescale_mistakes_fail_at_build(changes, match):
    for base in (MAE, SIMMIM):
        with pytest.raises(ValueError, match=match):
            _build(base, **changes)


def test_online_teacher_needs_no_timescale():
    model = _build(teacher='online', ema_half_life=None)
    assert model.teacher is None


@pytest.mark.parametrize('base', [MAE, SIMMIM], ids=['mae', 'simmim'])
def test_momentum_resolves_from_max_iters_at_the_first_step(base, hub):
    model = _build(base)
    assert model.teacher.momentum is None
    losses = model.loss(_images(2), [])
    # 0.25 of 40 iterations: a half-life of 10 iterations
    assert model.teacher.momentum == pytest.approx(1 - 0.5**0.1)
    assert model.teacher.momentum == half_life_momentum(0.25, 40)
    assert float(losses['teacher_distance']) == 0  # the first update copies
    hub.update_info('max_iters', 400)  # resolved once, not per step
    model.loss(_images(2), [])
    assert model.teacher.momentum == half_life_momentum(0.25, 40)


def test_momentum_needs_the_run_length(hub):
    model = _build()
    hub.update_info('max_iters', None)
    with pytest.raises(RuntimeError, match='no `max_iters`'):
        model.loss(_images(2), [])
    hub.update_info('max_iters', 2)  # 0.25 * 2 = half an iteration
    with pytest.raises(ValueError, match='at least one iteration'):
        model.loss(_images(2), [])


def test_the_teacher_moves_halfway_in_one_half_life(hub):
    model = _build()  # half-life 0.25 * 40 = 10 iterations
    model.update_teacher()  # copy
    start = _student_params(model)
    with torch.no_grad():
        for param in model.backbone.parameters():
            param.add_(1.0)
    for _ in range(10):
        model.update_teacher()
    for name, param in model.teacher.module.named_parameters():
        assert torch.allclose(param - start[name],
                              torch.full_like(param, 0.5), atol=1e-5), name


def test_teacher_distance_is_the_relative_l2_gap(hub):
    model = _build()
    model.update_teacher()
    with torch.no_grad():
        for i, param in enumerate(model.backbone.parameters()):
            param.mul_(1 + 0.1 * (i % 3))
    model.update_teacher()
    gap = norm = 0.
    student = dict(model.backbone.named_parameters())
    for name, param in model.teacher.module.named_parameters():
        student_param = student[name].detach().double()
        gap += float((param.double() - student_param).pow(2).sum())
        norm += float(student_param.pow(2).sum())
    distance = model.teacher_log_vars()['teacher_distance']
    assert distance.dtype == torch.float32 and distance.dim() == 0
    assert float(distance) == pytest.approx(math.sqrt(gap / norm), rel=1e-5)
    assert float(distance) > 0
    assert _build(teacher='online').teacher_log_vars() == {}


def _train(model, hub, iters: range, optim_wrapper) -> list:
    """``train_step`` over ``iters``; the student after each optimizer step."""
    students = []
    for it in iters:
        hub.update_info('iter', it)
        data = dict(
            inputs=(_images(2, seed=it) * 40 + 128).clamp(0, 255).to(
                torch.uint8),
            data_samples=[DataSample() for _ in range(2)])
        model.train_step(data, optim_wrapper)
        if optim_wrapper.should_update():
            students.append(_student_params(model))
    return students


def test_gradient_accumulation_keeps_the_half_life_in_optimizer_steps(hub):
    """With ``accumulative_counts=k`` the teacher moves every iteration;
    the ``k`` moves towards the unchanged student of one optimizer step
    compound to one move of ``1 - (1 - m) ** k``, whose half-life is the
    same fraction of the run's optimizer steps."""
    max_iters, k, half_life = 8, 2, 0.5
    hub.update_info('max_iters', max_iters)
    model = _build(ema_half_life=half_life)
    first = _student_params(model)
    optim_wrapper = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.5), accumulative_counts=k)
    optim_wrapper.initialize_count_status(model, 0, max_iters)
    students = _train(model, hub, range(max_iters), optim_wrapper)
    assert len(students) == max_iters // k
    momentum = model.teacher.momentum
    per_step = 1 - (1 - momentum)**k
    # half-life in optimizer steps = half_life * (max_iters / k)
    assert (1 - per_step)**(half_life * max_iters / k) == pytest.approx(0.5)
    # one EMA move per optimizer step, towards the student it left
    expected = first
    for student in students[:-1]:  # the last step happens after the last
        expected = {n: v + per_step * (student[n] - v)  # teacher update
                    for n, v in expected.items()}
    moved = False
    for name, param in model.teacher.module.named_parameters():
        assert torch.allclose(param, expected[name], atol=1e-6), name
        moved |= not torch.allclose(param, first[name])
    assert moved


def test_resume_restores_the_momentum_and_the_teacher(hub):
    def run(model, iters, optim):
        for it in iters:
            hub.update_info('iter', it)
            losses = model.loss(_images(2, seed=it), [])
            optim.zero_grad()
            losses['loss'].backward()
            optim.step()

    model = _build()
    run(model, range(3), torch.optim.SGD(model.parameters(), lr=0.1))
    state = copy.deepcopy(model.state_dict())
    run(model, range(3, 6), torch.optim.SGD(model.parameters(), lr=0.1))

    resumed = _build()
    resumed.load_state_dict(state)
    assert resumed.teacher.num_updates == 3
    run(resumed, range(3, 6), torch.optim.SGD(resumed.parameters(), lr=0.1))
    assert resumed.teacher.momentum == model.teacher.momentum
    for (name, a), b in zip(model.state_dict().items(),
                            resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_runner_resolves_the_half_life_and_logs_the_distance(tmp_path):
    """Through mmengine's Runner, with ``accumulative_counts=2``: the hub
    holds ``max_iters`` before the first step, and ``teacher_distance``
    reaches the logged scalars."""
    tiny = osp.join(osp.dirname(__file__), '..', '..', 'data', 'configs',
                    'ehm_mae_tiny_cpu.py')
    cfg = runner_config(tiny, str(tmp_path), 'teacher_timescale')
    cfg.model.ema_momentum = None
    cfg.model.ema_half_life = 0.5
    cfg.optim_wrapper.accumulative_counts = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=6,
                         val_interval=100)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100)
    runner = train_in_process(cfg)
    distance = runner.message_hub.get_scalar('train/teacher_distance').data[0]
    assert runner.model.teacher.momentum == half_life_momentum(0.5, 6)
    assert len(distance) == 6 and distance[0] == 0
    assert (distance[2:] > 0).all(), distance  # the student moved at 1
