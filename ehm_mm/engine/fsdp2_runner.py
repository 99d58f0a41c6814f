# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The runner of FSDP2-sharded training: whole-state checkpoints."""
from typing import Any, Dict, List, Optional, Union

import torch
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
from ..models.wrappers.sharded_state import gathered_state


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
    * :meth:`save_checkpoint` runs on every rank: the model's and the
      optimizer's whole state are gathered together (a collective), then
      rank 0 writes them as mmengine's ``Runner.save_checkpoint`` does.

    A checkpoint is therefore the unsharded model's (``state_dict`` with
    the usual keys, ``optimizer`` by parameter index): the converters and
    fine-tuning configs read it unchanged, and ``--resume`` shards the
    model, teacher and optimizer state back onto the ranks.
    """

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
            ValueError: ``FSDP2Wrapper`` with an ``AmpOptimWrapper``.
        """
        check_sharded_launch(self.cfg, self.launcher)
        check_sharded_precision(self.cfg)
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

    def save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        """Gather the whole state on every rank, then save on rank 0.

        Takes ``Runner.save_checkpoint``'s arguments. Every rank must call
        it (mmengine's checkpoint hooks do).
        """
        if not isinstance(self.model, FSDP2Wrapper):
            return super().save_checkpoint(*args, **kwargs)
        optimizers = (_optimizers(self.optim_wrapper) if isinstance(
            self.optim_wrapper, (OptimWrapper, OptimWrapperDict)) else [])
        with gathered_state(self.model.module, optimizers):
            super().save_checkpoint(*args, **kwargs)
