# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The EHM-MAE and EHM-SimMIM training steps read nothing back from the device.

On an accelerator a host read of a device value (``.item()``, ``bool()``,
``.tolist()``, ``nonzero`` ...) waits for every queued kernel. On CPU such
reads cost nothing, so a device-independent guard counts them instead: a
``TorchDispatchMode`` sees every aten op (``_local_scalar_dense`` is what
``item``, ``bool``, ``int`` and ``float`` call; ``nonzero``,
``masked_select``, ``unique`` ... have data-dependent shapes), and
``Tensor.tolist`` / ``Tensor.numpy`` are patched (they bypass dispatch).
The step is run with ``compact=False``, the static-shape path that
accelerators take (CPU shrinks the tree per level, reading counts, which
is free there). On CUDA the step also runs under
``torch.cuda.set_sync_debug_mode('error')``.
"""
import contextlib
from typing import Iterator, List
from unittest import mock

import pytest
import torch
from mmengine.logging import MessageHub
from tiny_models import (
    TINY_EHM_MAE,
    TINY_EHM_SIMMIM_SWIN,
    TINY_EHM_SIMMIM_VIT,
    build_tiny,
)
from torch.utils._python_dispatch import TorchDispatchMode

import ehm_mm  # noqa: F401
from ehm_mm import build_hierarchy

# aten ops whose result needs the device's data on the host
SYNC_OPS = ('_local_scalar_dense', 'nonzero', 'masked_select', 'unique',
            '_unique', '_unique2', 'unique_consecutive', 'unique_dim',
            'repeat_interleave', 'equal', 'allclose', 'is_nonzero')


class _CountSyncs(TorchDispatchMode):

    def __init__(self, found: List[str]) -> None:
        super().__init__()
        self.found = found

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS:
            self.found.append(f'aten.{name}')
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def host_reads() -> Iterator[List[str]]:
    """Collect the names of host reads made in the block."""
    found: List[str] = []
    originals = {name: getattr(torch.Tensor, name)
                 for name in ('tolist', 'numpy')}

    def patched(name):

        def read(self, *args, **kwargs):
            found.append(f'Tensor.{name}')
            return originals[name](self, *args, **kwargs)

        return read

    with contextlib.ExitStack() as stack:
        for name in originals:
            stack.enter_context(
                mock.patch.object(torch.Tensor, name, patched(name)))
        stack.enter_context(_CountSyncs(found))
        yield found


def test_the_guard_sees_host_reads():
    x = torch.arange(6.)
    with host_reads() as found:
        x.sum().item()
        bool(x[0] > 1)
        int(x[1])
        x.tolist()
        x.nonzero()
        if (x > 2).any():
            pass
    assert found == ['aten._local_scalar_dense'] * 3 + [
        'Tensor.tolist', 'aten.nonzero', 'aten._local_scalar_dense'
    ]


CFG = dict(
    TINY_EHM_MAE,
    masking=dict(TINY_EHM_MAE['masking'], hierarchy_cfg=dict(compact=False)))


@pytest.fixture
def hub():
    hub = MessageHub.get_instance('test_no_host_sync')
    hub.update_info('max_iters', 10)
    yield hub
    MessageHub._instance_dict.pop('test_no_host_sync')


def _model(device: str, **changes) -> torch.nn.Module:
    return build_tiny(CFG, **changes).to(device).train()


def _steps_without_host_reads(model: torch.nn.Module, hub, iters,
                              step_optimizer: bool = True,
                              each=None, size: int = 32) -> dict:
    """Run ``model.loss`` at each iteration of ``iters`` (backward, and an
    SGD step when ``step_optimizer``) on 4 random ``size`` px images and
    assert no step reads the host; ``each(losses)`` checks every step's
    losses. Returns the last losses."""
    images = torch.randn(4, 3, size, size)
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    for it in iters:
        hub.update_info('iter', it)
        with host_reads() as found:
            losses = model.loss(images, [])
        assert found == [], (it, found)
        if each is not None:
            each(losses)
        optim.zero_grad()
        losses['loss'].backward()
        if step_optimizer:
            optim.step()
    return losses


@pytest.mark.parametrize('teacher', ['ema', 'online'])
def test_training_step_makes_no_host_read(teacher, hub):
    model = _model('cpu', teacher=teacher)
    # iter 0: depth 0 (no tree, no teacher); then up to depth 3
    losses = _steps_without_host_reads(model, hub, (0, 1, 5, 10))
    assert float(losses['mask_depth']) > 0


@pytest.mark.parametrize('options', [
    dict(depth_unit='node_size'),
    dict(boundary='subtree'),
    dict(depth_unit='node_size', boundary='subtree', levels_per_octave=3.),
])
def test_masking_options_make_no_host_read(options, hub):
    model = _model('cpu', masking=dict(CFG['masking'], **options))
    losses = _steps_without_host_reads(
        model, hub, (0, 1, 5, 10), step_optimizer=False)
    # whole-node masks of the last step: nodes of more than one patch
    assert float(losses['mask_node_size']) > 1


@pytest.mark.parametrize('options', [
    dict(),
    dict(depth_unit='node_size', boundary='subtree'),
    dict(hierarchy_cfg=dict(compact=False, affinity_norm='degree')),
])
def test_pixel_affinity_step_makes_no_host_read(options, hub):
    # affinity_source='pixels': cues of the de-normalised inputs on their
    # device, no teacher
    model = _model(
        'cpu', affinity_source='pixels',
        masking=dict(CFG['masking'], **options),
        data_preprocessor=dict(type='SelfSupDataPreprocessor',
                               mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375]))

    def no_teacher_distance(losses: dict) -> None:
        assert 'teacher_distance' not in losses

    losses = _steps_without_host_reads(
        model, hub, (0, 1, 5, 10), each=no_teacher_distance)
    assert float(losses['mask_node_size']) > 1


@pytest.mark.parametrize('base, size', [
    (TINY_EHM_SIMMIM_SWIN, 128), (TINY_EHM_SIMMIM_VIT, 64)],
    ids=['swin', 'vit'])
def test_ehm_simmim_pixel_step_makes_no_host_read(base, size, hub):
    # EHMSimMIM(affinity_source='pixels'): cues per mask patch of the
    # de-normalised inputs, the masks expanded to the token grid
    model = build_tiny(
        base, affinity_source='pixels',
        masking=dict(base['masking'], hierarchy_cfg=dict(compact=False)),
        data_preprocessor=dict(type='SelfSupDataPreprocessor',
                               mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375])).train()

    def no_teacher_distance(losses: dict) -> None:
        assert 'teacher_distance' not in losses

    losses = _steps_without_host_reads(
        model, hub, (0, 1, 5, 10), each=no_teacher_distance, size=size)
    assert model.teacher is None and float(losses['mask_depth']) > 0


@pytest.mark.parametrize('base, size, affinity', [
    (TINY_EHM_SIMMIM_SWIN, 128, 'features'),
    (TINY_EHM_SIMMIM_VIT, 64, 'attention'),
    (TINY_EHM_SIMMIM_VIT, 64, 'features')],
    ids=['swin-features', 'vit-attention', 'vit-features'])
@pytest.mark.parametrize('teacher', ['ema', 'online'])
def test_ehm_simmim_teacher_step_makes_no_host_read(base, size, affinity,
                                                    teacher, hub):
    # EHMSimMIM's teacher affinity pooled to the mask grid, then the masks
    # expanded to the token grid
    model = build_tiny(
        base, affinity=affinity, teacher=teacher,
        masking=dict(base['masking'],
                     hierarchy_cfg=dict(compact=False))).train()
    losses = _steps_without_host_reads(
        model, hub, (0, 1, 5, 10), size=size)
    assert float(losses['mask_depth']) > 0


def test_half_life_teacher_step_makes_no_host_read(hub):
    # ema_half_life resolves the momentum from the hub's max_iters (a host
    # int) at the first step; the logged teacher distance stays a device
    # tensor.
    model = _model('cpu', ema_momentum=None, ema_half_life=0.3)

    def distance_on_device(losses: dict) -> None:
        assert isinstance(losses['teacher_distance'], torch.Tensor)

    losses = _steps_without_host_reads(
        model, hub, (0, 1, 5), each=distance_on_device)
    assert model.teacher.momentum == pytest.approx(1 - 0.5**(1 / 3))
    assert float(losses['teacher_distance']) > 0


def test_the_step_skips_the_teacher_when_every_depth_is_zero(hub):
    model = _model('cpu')
    images = torch.randn(4, 3, 32, 32)
    with mock.patch.object(model, 'teacher_affinity',
                           wraps=model.teacher_affinity) as teacher:
        hub.update_info('iter', 0)  # d = 0
        model.loss(images, [])
        assert teacher.call_count == 0
        hub.update_info('iter', 5)  # d = 1.5
        model.loss(images, [])
        assert teacher.call_count == 1


def test_fixed_level_trees_make_no_host_read():
    affinity = torch.randn(3, 36, 36)
    with host_reads() as found:
        build_hierarchy(affinity, (6, 6), num_levels=3, compact=False,
                        check_finite=False)
    assert found == []
    with host_reads() as found:  # the whole tree reads its level count
        build_hierarchy(affinity, (6, 6), compact=False)
    assert found


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('options', [
    dict(), dict(depth_unit='node_size', boundary='subtree'),
    dict(affinity_source='pixels')])
def test_cuda_training_step_does_not_synchronize(options, hub):
    options = dict(options)
    source = options.pop('affinity_source', 'teacher')
    model = _model('cuda', affinity_source=source, masking=dict(
        type='EvolvedHierarchicalMasking', d_min=0., d_max=3., **options))
    _cuda_steps_without_sync(model, hub, 32)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('base, size, affinity', [
    (TINY_EHM_SIMMIM_SWIN, 128, 'features'),
    (TINY_EHM_SIMMIM_VIT, 64, 'attention')], ids=['swin', 'vit'])
@pytest.mark.parametrize('source', ['teacher', 'pixels'])
def test_cuda_ehm_simmim_step_does_not_synchronize(base, size, affinity,
                                                   source, hub):
    model = build_tiny(base, affinity=affinity, affinity_source=source)
    _cuda_steps_without_sync(model.to('cuda').train(), hub, size)


def _cuda_steps_without_sync(model: torch.nn.Module, hub, size: int) -> None:
    """Run ``model.loss`` on 4 random ``size`` px CUDA images at
    iterations 0, 5 and 10, each after a warm-up step, under
    ``torch.cuda.set_sync_debug_mode('error')`` (a synchronising call
    raises) and bfloat16 autocast."""
    images = torch.randn(4, 3, size, size, device='cuda')
    for it in (0, 5, 10):
        hub.update_info('iter', it)
        model.loss(images, [])  # warm-up: allocations, pinned buffers
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            with torch.autocast('cuda', dtype=torch.bfloat16):
                model.loss(images, [])
        finally:
            torch.cuda.set_sync_debug_mode('default')
