# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Optimizer wrappers that skip the step of an iteration whose loss is NaN.

mmengine 0.10.7 steps the optimizer whatever the loss was: one NaN loss
makes every gradient, and after ``AdamW.step`` every weight and moment,
NaN. :class:`NonFiniteSkipOptimWrapper` and
:class:`NonFiniteSkipAmpOptimWrapper` (mmengine's ``OptimWrapper`` and
``AmpOptimWrapper`` plus :class:`NonFiniteSkipMixin`) skip that step, as
AMP's ``GradScaler`` skips a step whose float16 gradients overflowed, so the
weights and the optimizer state stay those of the last finite iteration.
:class:`~ehm_mm.engine.hooks.DivergenceGuardHook` counts the skipped steps
and stops a run that keeps diverging.

The decision is taken without an extra host read inside the step. The
flag ``isfinite(loss)`` stays on the device and reaches the step through
what already decides there:

- an optimizer that skips on the device (``fused=True`` Adam / AdamW / SGD,
  torch's ``found_inf`` protocol) gets ``found_inf = not isfinite(loss)``;
- with an enabled loss scaler (``AmpOptimWrapper`` on an accelerator) one
  gradient per device is multiplied by NaN when the loss is not finite
  (by 1 otherwise), so the scaler's own check of the gradients skips it;
- with gradient clipping by norm, the same NaN makes the norm NaN, which
  mmengine already reads to the host to log it; the step is skipped
  there (and also for a non-finite norm from a finite loss).

Only an optimizer that cannot skip on the device, without clipping or an
enabled scaler, needs the flag on the host: free when the parameters are on
the CPU; on an accelerator that is one host read per step, and a warning
(once) advises ``fused=True`` or clipping.
"""
import math
import warnings
from typing import Dict, Optional

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


class NonFiniteSkipMixin:
    """Skip the optimizer step of an iteration whose loss is not finite.

    Mixed into an mmengine ``OptimWrapper`` (before it in the bases). The
    loss of every ``update_params`` call since the last step is checked
    (gradient accumulation skips the step if any of them was not finite).

    Attributes:
        skipped_for_grad_norm (bool): Whether the last step was skipped on
            the host because the clipped gradient norm (read by mmengine)
            was not finite; read by ``DivergenceGuardHook``.
    """

    _loss_finite: Optional[torch.Tensor] = None
    _warned_host_read: bool = False
    skipped_for_grad_norm: bool = False

    def update_params(self,
                      loss: torch.Tensor,
                      step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        """Remember ``isfinite(loss)`` (on its device), then update.

        Args:
            loss (torch.Tensor): The loss of the iteration.
            step_kwargs (dict, optional): Arguments of ``optimizer.step``.
                Defaults to None.
            zero_kwargs (dict, optional): Arguments of
                ``optimizer.zero_grad``. Defaults to None.
        """
        finite = torch.isfinite(loss.detach())
        self._loss_finite = (finite if self._loss_finite is None else
                             self._loss_finite & finite)
        super().update_params(loss, step_kwargs, zero_kwargs)

    def step(self, **kwargs) -> None:
        """Update the parameters unless the loss (or clipped norm) was not
        finite.

        Args:
            **kwargs: Keyword arguments of ``optimizer.step``.
        """
        finite, self._loss_finite = self._loss_finite, None
        self.skipped_for_grad_norm = False
        if finite is None:  # step() called without update_params()
            super().step(**kwargs)
            return
        scaler = getattr(self, 'loss_scaler', None)
        if scaler is not None and scaler.is_enabled():
            # The scaler checks the gradients (and skips) itself.
            self._poison_gradients(finite)
            super().step(**kwargs)
            return
        if self.clip_grad_kwargs:
            self._poison_gradients(finite)
            norm = self._clip_and_read_norm()
            if norm is not None:
                # A non-finite loss made the norm NaN (poisoned gradient).
                if math.isfinite(norm):
                    self.optimizer.step(**kwargs)
                else:
                    self.skipped_for_grad_norm = True
                return
        self._step_unless(finite, **kwargs)

    def _poison_gradients(self, finite: torch.Tensor) -> None:
        """Multiply one gradient per device by NaN if the loss was not
        finite (by 1 otherwise), so that a check of the gradients sees it."""
        factor = torch.where(finite, 1.0, math.nan)
        seen = set()
        for group in self.optimizer.param_groups:
            for param in group['params']:
                if param.grad is None or param.grad.device in seen:
                    continue
                seen.add(param.grad.device)
                param.grad.mul_(factor.to(param.grad.device,
                                          non_blocking=True))

    def _clip_and_read_norm(self) -> Optional[float]:
        """Clip as mmengine does; the norm it logged, or None (clipping by
        value computes no norm)."""
        self._clip_grad()  # logs float(norm): mmengine's own host read
        key = f'train/{self.grad_name}'
        if self.grad_name != 'grad_norm' or (
                key not in self.message_hub.log_scalars):
            return None  # no gradient at all
        return float(self.message_hub.get_scalar(key).current())

    def _step_unless(self, finite: torch.Tensor, **kwargs) -> None:
        """``optimizer.step`` if ``finite``, decided on the device where the
        optimizer can."""
        optimizer = self.optimizer
        if getattr(optimizer, '_step_supports_amp_scaling', False):
            optimizer.found_inf = torch.logical_not(finite).float()
            try:
                optimizer.step(**kwargs)
            finally:
                del optimizer.found_inf
            return
        if not self._params_on_cpu() and not self._warned_host_read:
            self._warned_host_read = True
            warnings.warn(
                f'{type(self).__name__}: {type(optimizer).__name__} cannot '
                'skip a step on the device and no gradient clipping or loss '
                'scaler reads a value before the step, so the guard reads '
                'isfinite(loss) to the host every step (one device sync). '
                'Use fused=True (Adam, AdamW, SGD) or clip_grad to avoid '
                'it.', UserWarning)
        if bool(finite):
            optimizer.step(**kwargs)

    def _params_on_cpu(self) -> bool:
        return all(param.device.type == 'cpu'
                   for group in self.optimizer.param_groups
                   for param in group['params'])


@OPTIM_WRAPPERS.register_module()
class NonFiniteSkipOptimWrapper(NonFiniteSkipMixin, OptimWrapper):
    """mmengine's ``OptimWrapper`` that skips the step of a non-finite loss.

    See :class:`NonFiniteSkipMixin`; every option of
    :class:`mmengine.optim.OptimWrapper` is kept.
    """


@OPTIM_WRAPPERS.register_module()
class NonFiniteSkipAmpOptimWrapper(NonFiniteSkipMixin, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` that skips the step of a non-finite
    loss.

    See :class:`NonFiniteSkipMixin`; every option of
    :class:`mmengine.optim.AmpOptimWrapper` is kept.
    """
