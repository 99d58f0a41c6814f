# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import pytest
from mmengine.config import Config

from ehm_mm.utils import launch


def _cfg(**optim_wrapper) -> Config:
    return Config(
        dict(
            optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3),
                               **optim_wrapper),
            env_cfg=dict(dist_cfg=dict(backend='nccl'))))


def test_fall_back_from_amp_without_accelerator(monkeypatch):
    monkeypatch.setattr(launch, 'accelerator_available', lambda: False)
    cfg = _cfg(type='AmpOptimWrapper', loss_scale='dynamic', dtype='float16')
    with pytest.warns(UserWarning, match='AmpOptimWrapper'):
        assert launch.fall_back_from_amp(cfg)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper
    assert 'dtype' not in cfg.optim_wrapper
    assert cfg.optim_wrapper.optimizer.lr == 1e-3


def test_amp_kept_with_accelerator(monkeypatch):
    monkeypatch.setattr(launch, 'accelerator_available', lambda: True)
    cfg = _cfg(type='AmpOptimWrapper', loss_scale='dynamic')
    assert not launch.fall_back_from_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_plain_optim_wrapper_untouched(monkeypatch):
    monkeypatch.setattr(launch, 'accelerator_available', lambda: False)
    cfg = _cfg(type='OptimWrapper')
    assert not launch.fall_back_from_amp(cfg)
    assert cfg.optim_wrapper.type == 'OptimWrapper'


def test_enable_amp():
    cfg = _cfg(type='OptimWrapper')
    launch.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    with pytest.raises(ValueError, match='optim_wrapper.type'):
        launch.enable_amp(_cfg(type='ApexOptimWrapper'))


def test_gloo_on_cpu_distributed(monkeypatch):
    monkeypatch.setattr(launch.torch.cuda, 'is_available', lambda: False)
    cfg = _cfg(type='OptimWrapper')
    assert not launch.use_gloo_without_cuda(cfg, 'none')
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    with pytest.warns(UserWarning, match='gloo'):
        assert launch.use_gloo_without_cuda(cfg, 'pytorch')
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg.type == 'MMDistributedDataParallel'
    assert cfg.model_wrapper_cfg.device_ids is None
    with pytest.raises(RuntimeError, match='launcher pytorch'):
        launch.init_cpu_process_group(cfg, 'slurm')


def test_default_work_dir():
    cfg = Config(dict())
    launch.set_default_work_dir(cfg, 'configs/ehm_mae_vit-b.py', None)
    assert cfg.work_dir == './work_dirs/ehm_mae_vit-b'
    launch.set_default_work_dir(cfg, 'configs/x.py', '/tmp/wd')
    assert cfg.work_dir == '/tmp/wd'


def test_drop_collate_fn_scope():
    cfg = Config(
        dict(
            train_dataloader=dict(
                collate_fn=dict(type='default_collate', _scope_='mmpretrain')),
            val_dataloader=None))
    launch.drop_collate_fn_scope(cfg)
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate')


def test_launch_args_and_local_rank(monkeypatch):
    import argparse
    parser = argparse.ArgumentParser()
    launch.add_launch_args(parser)
    args = parser.parse_args(
        ['--launcher', 'pytorch', '--local-rank', '3', '--cfg-options',
         'a.b=1'])
    assert args.launcher == 'pytorch'
    assert args.cfg_options == {'a.b': 1}
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    launch.export_local_rank(args)
    assert launch.os.environ['LOCAL_RANK'] == '3'
    monkeypatch.setenv('LOCAL_RANK', '1')  # set by torchrun: kept
    launch.export_local_rank(args)
    assert launch.os.environ['LOCAL_RANK'] == '1'
    with pytest.raises(SystemExit):
        parser.parse_args(['--launcher', 'kubernetes'])


def test_leave_process_group(tmp_path):
    import torch.distributed as dist
    assert not dist.is_initialized()
    assert not launch.leave_process_group()  # no group: nothing to leave
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store',
                            rank=0, world_size=1)
    try:
        assert launch.leave_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_guarded_wrappers_keep_the_guard(monkeypatch):
    """--amp and the CPU fall-back swap the divergence-guarded wrappers
    for each other, never for mmengine's unguarded ones."""
    monkeypatch.setattr(launch, 'accelerator_available', lambda: False)
    cfg = _cfg(type='NonFiniteSkipAmpOptimWrapper', loss_scale='dynamic')
    with pytest.warns(UserWarning, match="'NonFiniteSkipOptimWrapper'"):
        assert launch.fall_back_from_amp(cfg)
    assert cfg.optim_wrapper.type == 'NonFiniteSkipOptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper
    launch.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'NonFiniteSkipAmpOptimWrapper'
    launch.enable_amp(cfg)  # already enabled: unchanged
    assert cfg.optim_wrapper.type == 'NonFiniteSkipAmpOptimWrapper'
