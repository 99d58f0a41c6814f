# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""A non-finite loss skips its step; a diverging run stops at once and
keeps its last good checkpoint."""
import copy
import glob
import math
import os
import os.path as osp
import sys
from unittest import mock

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from runner_utils import runner_config, train_in_process

import ehm_mm  # noqa: F401
from ehm_mm.engine import (
    NonFiniteSkipAmpOptimWrapper,
    NonFiniteSkipOptimWrapper,
    TrainingDivergedError,
)
from ehm_mm.utils import load_local_checkpoint

sys.path.insert(
    0, osp.join(osp.dirname(__file__), '..', 'test_models', 'test_selfsup'))
from test_no_host_sync import host_reads  # noqa: E402

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TINY = osp.join(REPO_ROOT, 'tests', 'data', 'configs', 'ehm_mae_tiny_cpu.py')


def _tiny_cfg(tmp_path, name: str, iters: int):
    cfg = runner_config(TINY, str(tmp_path), name, iters=iters)
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    cfg.train_cfg.val_interval = 1000  # no validation
    cfg.custom_hooks = []
    return cfg


def _all_finite(state: dict) -> bool:
    return all(
        torch.isfinite(t).all() for t in state.values()
        if torch.is_tensor(t) and t.is_floating_point())


def test_huge_learning_rate_stops_with_a_named_error(tmp_path):
    """lr=1e8: the loss is NaN from iteration 2. Before, training went on
    on NaN and saved NaN weights over the last good checkpoint. Now the 3
    non-finite steps are skipped and logged, then training stops naming
    the iteration, the last finite loss, the count and the checkpoint to
    resume from, which holds finite weights."""
    cfg = _tiny_cfg(tmp_path, 'diverge', iters=12)
    cfg.optim_wrapper.optimizer.lr = 1e8
    with pytest.raises(TrainingDivergedError) as info:
        train_in_process(cfg)
    message = str(info.value)
    work_dir = tmp_path / 'work'
    last = (work_dir / 'last_checkpoint').read_text()
    assert 'Training diverged at iteration 4' in message
    assert 'not finite in 3 iterations in a row' in message
    assert 'The last finite loss was' in message
    assert 'at iteration 1' in message
    assert f'The last good checkpoint is {last}' in message
    assert 'lower learning rate' in message and 'bfloat16' in message
    # EHM's masks fell back to depth 0 on the NaN model: part of the error
    assert 'teacher affinity of 16 image(s) held NaN' in message
    checkpoints = sorted(glob.glob(str(work_dir / 'iter_*.pth')))
    assert checkpoints == [last]
    state = load_local_checkpoint(last)['state_dict']
    assert _all_finite(state)
    log = open(glob.glob(str(work_dir / '*' / '*.log'))[0]).read()
    assert ('Iteration 2: the loss is not finite (loss nan); optimizer step '
            'skipped (1 in a row, 1 in this run)') in log
    assert '(3 in a row, 3 in this run)' in log


def test_without_the_guard_nan_weights_are_not_saved(tmp_path):
    """The same run with mmengine's OptimWrapper and no guard makes the
    weights NaN; the checkpoint hook refuses to save them, and the last
    good checkpoint stays (max_keep_ckpts=1 would have deleted it)."""
    cfg = _tiny_cfg(tmp_path, 'unguarded', iters=12)
    cfg.optim_wrapper.optimizer.lr = 1e8
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.default_hooks.pop('divergence_guard')
    with pytest.raises(TrainingDivergedError) as info:
        train_in_process(cfg)
    work_dir = tmp_path / 'work'
    assert 'Not saving iter_2.pth' in str(info.value)
    assert sorted(glob.glob(str(work_dir / 'iter_*.pth'))) == [
        str(work_dir / 'iter_1.pth')]
    assert (work_dir / 'last_checkpoint').read_text() == str(
        work_dir / 'iter_1.pth')
    assert _all_finite(load_local_checkpoint(
        work_dir / 'iter_1.pth')['state_dict'])


class _NaNLossAt(Hook):
    """Makes the loss of one iteration NaN; records the student weights
    before and after it."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration
        self.weights = {}

    def _student(self, runner) -> dict:
        return {k: v.detach().clone()
                for k, v in runner.model.backbone.state_dict().items()}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != self.iteration:
            return
        self.weights['before'] = self._student(runner)
        model = runner.model
        parse = type(model).parse_losses

        def nan_loss(losses):
            loss, log_vars = parse(model, losses)
            del model.parse_losses  # only this iteration
            return loss * math.nan, dict(log_vars, loss=loss * math.nan)

        model.parse_losses = nan_loss

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == self.iteration:
            self.weights['after'] = self._student(runner)


def test_a_single_nonfinite_step_is_skipped_and_counted(tmp_path):
    """One NaN loss (iteration 3 of 6): that step leaves the weights as
    they were, it is logged and counted, and training goes on."""
    cfg = _tiny_cfg(tmp_path, 'one_nan', iters=6)
    nan_hook = _NaNLossAt(2)
    with pytest.MonkeyPatch.context() as patch:
        from mmengine.runner import Runner
        register = Runner.register_custom_hooks

        def with_nan_hook(self, hooks):
            register(self, hooks)
            self.register_hook(nan_hook)

        patch.setattr(Runner, 'register_custom_hooks', with_nan_hook)
        runner = train_in_process(cfg)
    before, after = nan_hook.weights['before'], nan_hook.weights['after']
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert runner.message_hub.get_info('skipped_steps') == 1
    assert runner.iter == 6
    assert math.isfinite(runner.message_hub.get_scalar('train/loss').current())
    log = open(glob.glob(str(tmp_path / 'work' / '*' / '*.log'))[0]).read()
    assert 'Iteration 3: the loss is not finite' in log
    assert '(1 in a row, 1 in this run)' in log


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))


def _wrapper(kind: str, guarded: bool, model: torch.nn.Module):
    """An optimizer wrapper over ``model`` for one of the skip paths."""
    fused = kind == 'fused'
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
    if kind == 'scaler':
        cls = NonFiniteSkipAmpOptimWrapper if guarded else AmpOptimWrapper
        # AmpOptimWrapper refuses to be built without an accelerator; its
        # scaler is then replaced by an enabled one on the CPU: the path
        # AmpOptimWrapper takes on an accelerator.
        with mock.patch('mmengine.optim.optimizer.amp_optimizer_wrapper.'
                        'is_cuda_available', lambda: True):
            wrapper = cls(optimizer=optimizer)
        wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=4.)
        return wrapper
    cls = NonFiniteSkipOptimWrapper if guarded else OptimWrapper
    clip = dict(max_norm=1.0) if kind == 'clip' else None
    return cls(optimizer=optimizer, clip_grad=clip)


def _state(model, optimizer) -> list:
    tensors = [p.detach().clone() for p in model.parameters()]
    for state in optimizer.state.values():
        tensors += [v.detach().clone() for v in state.values()]
    return tensors


KINDS = ['fused', 'foreach', 'clip', 'scaler']


@pytest.fixture
def hub():
    hub = MessageHub.get_instance('test_divergence_guard')
    yield hub
    MessageHub._instance_dict.pop('test_divergence_guard')


@pytest.mark.parametrize('kind', KINDS)
def test_nonfinite_loss_step_leaves_weights_and_state(kind, hub):
    """Finite, NaN, inf, finite losses: the two non-finite steps change no
    weight, moment or step count; the finite ones do."""
    model = _model()
    wrapper = _wrapper(kind, True, model)
    x = torch.randn(16, 4)
    for scale in (1.0, math.nan, math.inf, 1.0):
        before = _state(model, wrapper.optimizer)
        wrapper.update_params(model(x).pow(2).mean() * scale)
        after = _state(model, wrapper.optimizer)
        unchanged = len(before) == len(after) and all(
            torch.equal(a, b) for a, b in zip(before, after))
        assert unchanged == (not math.isfinite(scale)), (kind, scale)
        assert all(torch.isfinite(t).all() for t in after)


@pytest.mark.parametrize('kind', ['fused', 'clip', 'scaler'])
def test_the_guard_adds_no_host_read(kind, hub):
    """The guard reads nothing back from the device that mmengine does not
    read already: no read at all with fused AdamW; with clipping or a loss
    scaler no more reads than mmengine's own wrapper makes (the norm it
    logs, the scaler's check), for a NaN step and for a finite one (on the
    CPU, torch's non-fused AdamW reads its step count: the unguarded NaN
    step makes those reads, the skipped one does not)."""
    counts = {}
    for guarded in (False, True):
        model = _model()
        wrapper = _wrapper(kind, guarded, model)
        x = torch.randn(16, 4)
        wrapper.update_params(model(x).pow(2).mean())  # states created
        for scale in (math.nan, 1.0):
            with host_reads() as found:
                wrapper.update_params(model(x).pow(2).mean() * scale)
            counts[guarded, scale] = found
    for scale in (math.nan, 1.0):
        assert len(counts[True, scale]) <= len(counts[False, scale]), (
            scale, counts)
        if kind == 'fused':
            assert counts[True, scale] == []
    if kind != 'fused':  # mmengine's own read is still there
        assert counts[True, 1.0] == counts[False, 1.0] != []


def test_host_read_only_where_nothing_decides_on_the_device(hub,
                                                            monkeypatch):
    """A non-fused optimizer without clipping or scaler: the flag is read
    on the host (free on the CPU); on an accelerator a warning says so."""
    model = _model()
    wrapper = _wrapper('foreach', True, model)
    monkeypatch.setattr(type(wrapper), '_params_on_cpu', lambda self: False)
    with pytest.warns(UserWarning, match='fused=True'):
        wrapper.update_params(model(torch.randn(2, 4)).sum())


def test_unguarded_wrapper_is_refused(tmp_path):
    cfg = _tiny_cfg(tmp_path, 'refused', iters=2)
    cfg.optim_wrapper.type = 'OptimWrapper'
    with pytest.raises(TypeError, match="'NonFiniteSkipOptimWrapper'"):
        train_in_process(copy.deepcopy(cfg))
    assert not os.path.exists(tmp_path / 'work' / 'iter_1.pth')
