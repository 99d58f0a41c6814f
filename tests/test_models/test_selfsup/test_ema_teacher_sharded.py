# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EMATeacher on FSDP2-sharded parameters (one gloo rank, in process).

With one rank a shard is the whole tensor, so the sharded paths (local
``_foreach_lerp_``, the all-reduced distance) must give exactly what the
unsharded teacher gives; the 2-rank runs are in
``tests/test_models/test_wrappers/test_fsdp2_wrapper.py``.
"""
import copy
import socket

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from ehm_mm.models.backbones import EHMMAEViT
from ehm_mm.models.selfsup.ema_teacher import EMATeacher, is_sharded

ARCH = dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32)


@pytest.fixture
def mesh():
    if dist.is_initialized():
        pytest.fail('a process group is already initialised')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=0, world_size=1)
    try:
        yield init_device_mesh('cpu', (1, ))
    finally:
        dist.destroy_process_group()


def _shard(vit: torch.nn.Module, mesh) -> None:
    for layer in vit.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(vit, mesh=mesh)


def _perturb(vit: torch.nn.Module, scale: float) -> None:
    with torch.no_grad():
        for p in vit.parameters():
            local = p.to_local() if isinstance(p, DTensor) else p
            local.add_(scale * torch.sin(torch.arange(local.numel()).view(
                local.shape).float()))


def _whole(module: torch.nn.Module) -> dict:
    return {n: (p.full_tensor() if isinstance(p, DTensor) else p).detach()
            for n, p in module.named_parameters()}


def test_local_shard_update_and_distance_equal_unsharded(mesh):
    torch.manual_seed(0)
    student = EHMMAEViT(arch=ARCH, img_size=16, patch_size=8)
    reference = copy.deepcopy(student)
    teacher, ref_teacher = (EMATeacher(student, momentum=0.25),
                            EMATeacher(reference, momentum=0.25))
    _shard(student, mesh)
    _shard(teacher.module, mesh)
    assert is_sharded(teacher.module) and not is_sharded(ref_teacher.module)
    for step in range(3):
        for vit in (student, reference):
            _perturb(vit, 0.1 * (step + 1))
        teacher.update_parameters(student)
        ref_teacher.update_parameters(reference)
        got, want = _whole(teacher.module), _whole(ref_teacher.module)
        assert got.keys() == want.keys()
        for name in want:
            assert torch.equal(got[name], want[name]), name
        torch.testing.assert_close(
            teacher.relative_distance(student),
            ref_teacher.relative_distance(reference), atol=1e-7, rtol=1e-6)
    assert teacher.num_updates == 3 and int(teacher.steps) == 3
    # the teacher moved towards, not onto, the student
    assert float(teacher.relative_distance(student)) > 1e-3


def test_update_of_a_gathered_teacher_is_refused(mesh):
    student = EHMMAEViT(arch=ARCH, img_size=16, patch_size=8)
    teacher = EMATeacher(student, momentum=0.25)
    _shard(student, mesh)
    _shard(teacher.module, mesh)
    for vit in (student, teacher.module):  # root groups gathered, as in
        vit.unshard()  # a forward: an update would be lost
    with pytest.raises(RuntimeError, match='is gathered by FSDP2'):
        teacher.update_parameters(student)
    for vit in (student, teacher.module):
        vit.reshard()
    teacher.update_parameters(student)
    assert teacher.num_updates == 1
