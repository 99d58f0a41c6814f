# Copyright (c) OpenMMLab. All rights reserved.
"""Config adjustments shared by ``tools/train.py`` and ``tools/test.py``.

The tools run any OpenMMLab 2.x config (mmpretrain, mmseg or mmdet scope),
so what they change in a config lives here, where it can be unit tested.
"""
import os.path as osp
import warnings
from typing import Optional

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

# Keys only ``AmpOptimWrapper`` understands.
_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def accelerator_available() -> bool:
    """Whether a device AMP can run on (CUDA, NPU, MLU or MUSA).

    Returns:
        bool: True when mmengine's ``AmpOptimWrapper`` can be used.
    """
    from mmengine.device import (
        is_cuda_available,
        is_mlu_available,
        is_musa_available,
        is_npu_available,
    )
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def enable_amp(cfg: Config) -> None:
    """Switch the config's optimizer wrapper to ``AmpOptimWrapper``.

    Args:
        cfg (Config): The config, changed in place.
    """
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in your config.',
                  logger='current')
        return
    if optim_wrapper != 'OptimWrapper':
        raise ValueError(
            '`--amp` is only supported when optim_wrapper.type is '
            f"'OptimWrapper', but got {optim_wrapper!r}.")
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def fall_back_from_amp(cfg: Config) -> bool:
    """Replace ``AmpOptimWrapper`` by ``OptimWrapper`` without an accelerator.

    mmpretrain's MAE configs train with ``AmpOptimWrapper``, which mmengine
    refuses to build on a CPU-only machine. Falling back (with a warning)
    lets a user try any config on CPU; numbers then come from fp32 training.

    Args:
        cfg (Config): The config, changed in place.

    Returns:
        bool: True when the wrapper was replaced.
    """
    optim_wrapper = cfg.get('optim_wrapper')
    if not isinstance(optim_wrapper, (dict, ConfigDict)):
        return False
    if optim_wrapper.get('type') != 'AmpOptimWrapper':
        return False
    if accelerator_available():
        return False
    warnings.warn(
        'No CUDA/NPU/MLU/MUSA device found: optim_wrapper.type '
        "'AmpOptimWrapper' is replaced by 'OptimWrapper' (fp32 training).",
        UserWarning)
    optim_wrapper.type = 'OptimWrapper'
    for key in _AMP_ONLY_KEYS:
        optim_wrapper.pop(key, None)
    return True


def use_gloo_without_cuda(cfg: Config, launcher: str) -> bool:
    """Use the gloo backend for distributed runs on a machine without CUDA.

    OpenMMLab runtimes default to ``nccl``, which needs GPUs. With
    ``--launcher pytorch`` on CPU (e.g. ``tools/dist_train.sh CFG 2``),
    gloo makes the same config run as CPU DDP.

    Args:
        cfg (Config): The config, changed in place.
        launcher (str): The job launcher (``'none'`` means not distributed).

    Returns:
        bool: True when the backend was changed.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') == 'gloo':
        return False
    warnings.warn(
        f"No CUDA device: env_cfg.dist_cfg.backend "
        f"{dist_cfg.get('backend', 'nccl')!r} is replaced by 'gloo'.",
        UserWarning)
    dist_cfg.backend = 'gloo'
    return True


def set_default_work_dir(cfg: Config, config_path: str,
                         work_dir: Optional[str]) -> None:
    """Set ``cfg.work_dir``: CLI first, then the config, then the file name.

    Args:
        cfg (Config): The config, changed in place.
        config_path (str): Path of the config file.
        work_dir (str, optional): ``--work-dir`` from the command line.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def drop_collate_fn_scope(cfg: Config) -> None:
    """Remove the ``_scope_`` key mmengine adds to inherited ``collate_fn``.

    A config that inherits another package's config (``_base_ =
    'mmpretrain::...'``) gets ``_scope_`` written into every inherited dict
    with a ``type``. mmengine's ``Runner.build_dataloader`` passes all keys
    but ``type`` of ``collate_fn`` to the function, so training fails with
    ``default_collate() got an unexpected keyword argument '_scope_'``.
    The function is still found by name under the config's default scope.

    Args:
        cfg (Config): The config, changed in place.
    """
    for loader_name in ('train_dataloader', 'val_dataloader',
                        'test_dataloader'):
        loader = cfg.get(loader_name)
        if not isinstance(loader, (dict, ConfigDict)):
            continue
        collate_fn = loader.get('collate_fn')
        if isinstance(collate_fn, (dict, ConfigDict)):
            collate_fn.pop('_scope_', None)
