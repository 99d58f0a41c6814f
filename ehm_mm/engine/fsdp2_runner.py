# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The runner of FSDP2-sharded training: whole or distributed checkpoints."""
import inspect
import os
import os.path as osp
import shutil
from typing import Any, Dict, List, Optional, Union

import torch
from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from torch import nn

from ..models.wrappers import (
    FSDP2Wrapper,
    check_sharded_launch,
    check_sharded_precision,
    register_full_optim_state_hooks,
)
from ..models.wrappers.distributed_checkpoint import (
    FOLDER_EXT,
    META_KEY,
    distributed_folder,
    load_distributed,
    save_distributed,
)
from ..models.wrappers.sharded_state import gathered_state, state_dict_mode

#: ``checkpoint_format`` values of a config.
CHECKPOINT_FORMATS = ('full', 'distributed')


def checkpoint_format(cfg: Config) -> str:
    """The config's ``checkpoint_format`` (``'full'`` when not set).

    Args:
        cfg (Config): A run's config.

    Returns:
        str: ``'full'`` or ``'distributed'``.

    Raises:
        ValueError: Another value.
    """
    value = cfg.get('checkpoint_format', 'full')
    if value not in CHECKPOINT_FORMATS:
        raise ValueError(f'checkpoint_format must be one of '
                         f'{CHECKPOINT_FORMATS}, got {value!r}')
    return value


def _optimizers(optim_wrapper: Union[OptimWrapper, OptimWrapperDict]
                ) -> List[torch.optim.Optimizer]:
    """The torch optimizers of an optimizer wrapper (or a dict of them)."""
    if isinstance(optim_wrapper, OptimWrapperDict):
        return [w.optimizer for w in optim_wrapper.values()]
    return [optim_wrapper.optimizer]


@RUNNERS.register_module()
class FSDP2Runner(Runner):
    """mmengine's ``Runner`` for models sharded by :class:`FSDP2Wrapper`.

    Three changes, all about the sharded state:

    * a config that selects ``FSDP2Wrapper`` on a single-process launch is
      refused (:func:`~ehm_mm.models.wrappers.check_sharded_launch`), where
      mmengine would silently train unsharded, and so is one with an
      ``AmpOptimWrapper``
      (:func:`~ehm_mm.models.wrappers.check_sharded_precision`: the
      wrapper's ``mixed_precision`` is the sharded mixed precision);
    * the optimizer's state dict holds whole tensors keyed as for the
      unsharded model, and loading shards them back
      (:func:`~ehm_mm.models.wrappers.register_full_optim_state_hooks`);
    * :meth:`save_checkpoint` runs on every rank and writes the config's
      ``checkpoint_format``:

      - ``'full'`` (default): the model's and the optimizer's whole state
        are gathered together (a collective), then rank 0 writes them as
        mmengine's ``Runner.save_checkpoint`` does. A checkpoint is the
        unsharded model's (``state_dict`` with the usual keys,
        ``optimizer`` by parameter index): the converters and fine-tuning
        configs read it unchanged;
      - ``'distributed'``: every rank writes its shards into the folder
        ``iter_N.dcp`` with ``torch.distributed.checkpoint`` (nothing is
        gathered), and rank 0 writes ``iter_N.pth`` without the model and
        optimizer state, naming the folder
        (:mod:`~ehm_mm.models.wrappers.distributed_checkpoint`). Folders
        whose file the checkpoint hook deleted (``max_keep_ckpts``) are
        deleted after each training iteration and epoch.
        ``tools/model_converters/ehm_dcp2full.py`` makes the whole
        checkpoint of it.

    ``--resume`` and ``load_from`` read either format, on any number of
    ranks, and shard the model, teacher and optimizer state onto them.
    """

    # The distributed checkpoint folder the last `load_checkpoint` read the
    # model from (None: the checkpoint was whole).
    _loaded_folder: Optional[str] = None

    def wrap_model(self, model_wrapper_cfg: Optional[Dict],
                   model: nn.Module) -> nn.Module:
        """mmengine's wrapping, after the launch and precision checks.

        Args:
            model_wrapper_cfg (dict, optional): The wrapper's config.
            model (nn.Module): The model.

        Returns:
            nn.Module: The wrapped model.

        Raises:
            RuntimeError: ``FSDP2Wrapper`` on a single-process launch.
            ValueError: ``FSDP2Wrapper`` with an ``AmpOptimWrapper``, or
                an unknown ``checkpoint_format``.
        """
        check_sharded_launch(self.cfg, self.launcher)
        check_sharded_precision(self.cfg)
        self.checkpoint_format = checkpoint_format(self.cfg)
        return super().wrap_model(model_wrapper_cfg, model)

    def build_optim_wrapper(self, optim_wrapper: Any) -> Any:
        """mmengine's optimizer wrapper with whole-tensor state dicts.

        Args:
            optim_wrapper: The config or the built wrapper.

        Returns:
            OptimWrapper | OptimWrapperDict: The built wrapper.
        """
        built = super().build_optim_wrapper(optim_wrapper)
        if isinstance(self.model, FSDP2Wrapper):
            for optimizer in _optimizers(built):
                register_full_optim_state_hooks(optimizer)
        return built

    def _optimizers(self) -> List[torch.optim.Optimizer]:
        """The built optimizers (none before ``train`` builds them)."""
        if isinstance(self.optim_wrapper, (OptimWrapper, OptimWrapperDict)):
            return _optimizers(self.optim_wrapper)
        return []

    def save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        """Write a checkpoint in the config's ``checkpoint_format``.

        Takes ``Runner.save_checkpoint``'s arguments. Every rank must call
        it (mmengine's checkpoint hooks do).
        """
        if not isinstance(self.model, FSDP2Wrapper):
            return super().save_checkpoint(*args, **kwargs)
        optimizers = self._optimizers()
        if self.checkpoint_format == 'full':
            with gathered_state(self.model.module, optimizers):
                return super().save_checkpoint(*args, **kwargs)
        bound = inspect.signature(Runner.save_checkpoint).bind(
            self, *args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        folder = distributed_folder(
            osp.join(arguments['out_dir'], arguments['filename']))
        keys = save_distributed(self.model.module, optimizers, folder)
        arguments['meta'] = dict(
            arguments['meta'] or {},
            **{META_KEY: dict(folder=osp.basename(folder), keys=keys)})
        with state_dict_mode([self.model.module, *optimizers], 'left_out'):
            super().save_checkpoint(*bound.args[1:], **bound.kwargs)

    def load_checkpoint(self, filename: str, *args: Any,
                        **kwargs: Any) -> Dict:
        """mmengine's load; the model from the folder of a distributed one.

        Takes ``Runner.load_checkpoint``'s arguments.

        Args:
            filename (str): A checkpoint file.

        Returns:
            dict: The loaded checkpoint.
        """
        checkpoint = super().load_checkpoint(filename, *args, **kwargs)
        entry = checkpoint.get('meta', {}).get(META_KEY)
        self._loaded_folder = None
        if entry is not None and isinstance(self.model, FSDP2Wrapper):
            # The file holds no model state (mmengine's missing-keys
            # message above is expected): it is in the folder.
            folder = osp.join(osp.dirname(filename), entry['folder'])
            load_distributed(self.model.module, [], folder)
            self._loaded_folder = folder
            self.logger.info(f'Loaded the model from {folder}')
        return checkpoint

    def resume(self, filename: str, *args: Any, **kwargs: Any) -> None:
        """mmengine's resume; the optimizer from a distributed folder.

        Takes ``Runner.resume``'s arguments.

        Args:
            filename (str): A checkpoint file.
        """
        super().resume(filename, *args, **kwargs)  # calls load_checkpoint
        bound = inspect.signature(Runner.resume).bind(self, filename, *args,
                                                      **kwargs)
        bound.apply_defaults()
        folder = self._loaded_folder
        if folder is not None and bound.arguments['resume_optimizer']:
            load_distributed(self.model.module, self._optimizers(), folder,
                             load_model=False)
            self.logger.info(f'Loaded the optimizer state from {folder}')

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """mmengine's hooks; then delete orphaned distributed folders."""
        super().call_hook(fn_name, **kwargs)
        if (fn_name in ('after_train_iter', 'after_train_epoch')
                and getattr(self, 'checkpoint_format', 'full') ==
                'distributed' and self.rank == 0):
            for hook in self.hooks:
                if isinstance(hook, CheckpointHook):
                    remove_orphaned_folders(hook.out_dir or self.work_dir)


def remove_orphaned_folders(out_dir: str) -> List[str]:
    """Delete the distributed checkpoint folders whose file is gone.

    Args:
        out_dir (str): Where the checkpoints are.

    Returns:
        List[str]: The deleted folders.
    """
    if not osp.isdir(out_dir):
        return []
    names = os.listdir(out_dir)
    stems = {osp.splitext(n)[0] for n in names
             if osp.isfile(osp.join(out_dir, n))}
    removed = []
    for name in names:
        path = osp.join(out_dir, name)
        stem, ext = osp.splitext(name)
        if ext == FOLDER_EXT and osp.isdir(path) and stem not in stems:
            shutil.rmtree(path)
            removed.append(path)
    return removed
