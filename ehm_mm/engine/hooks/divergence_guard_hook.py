# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Stop a diverging run at once, naming where to resume from.

The optimizer wrappers of :mod:`ehm_mm.engine.optim_wrappers` skip the
step of an iteration whose loss is not finite. :class:`DivergenceGuardHook`
reads the loss the runner already brought to the host for logging
(``RuntimeInfoHook`` puts the model's ``log_vars`` into the message hub
after every iteration), logs each skipped step with its count, and after
``max_consecutive_nonfinite`` non-finite iterations in a row raises
:class:`TrainingDivergedError` naming the iteration, the last finite loss,
the count and the last checkpoint to resume from.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapperDict
from mmengine.registry import HOOKS
from torch import nn

from ..optim_wrappers import NonFiniteSkipMixin

#: What to try after a divergence; part of every TrainingDivergedError.
ADVICE = ('Resume from the last good checkpoint (--resume, or load_from) '
          'with a lower learning rate (optim_wrapper.optimizer.lr) or more '
          'warm-up, or train in bfloat16 instead of float16 '
          "(optim_wrapper.dtype='bfloat16').")


class TrainingDivergedError(RuntimeError):
    """Training produced non-finite losses or weights and was stopped."""


def nonfinite_tensors(model: nn.Module) -> Tuple[List[str], int]:
    """The floating-point tensors of a model's state that hold NaN or inf.

    Reads one boolean per tensor to the host at once (meant for checkpoint
    time, not for the training step).

    Args:
        model (nn.Module): The model (a DDP wrapper is unwrapped).

    Returns:
        tuple[list[str], int]: The names of the non-finite tensors, and the
        number of floating-point tensors checked.
    """
    if is_model_wrapper(model):
        model = model.module
    names, flags = [], []
    for name, tensor in model.state_dict().items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            names.append(name)
            flags.append(torch.isfinite(tensor).all().to('cpu'))
    if not flags:
        return [], 0
    finite = torch.stack(flags).tolist()
    return [n for n, ok in zip(names, finite) if not ok], len(names)


def last_checkpoint_text(runner) -> str:
    """Name the last checkpoint this run saved (or resumed from).

    Args:
        runner (Runner): The runner.

    Returns:
        str: A sentence naming the checkpoint, or saying there is none.
    """
    last = runner.message_hub.get_info('last_ckpt')
    if last:
        return f'The last good checkpoint is {last}.'
    return ('No checkpoint was saved in this run; restart from the '
            'beginning or from the checkpoint you started from.')


@HOOKS.register_module()
class DivergenceGuardHook(Hook):
    """Count skipped non-finite steps; stop after too many in a row.

    Needs an optimizer wrapper that skips them
    (``NonFiniteSkipOptimWrapper`` / ``NonFiniteSkipAmpOptimWrapper``);
    any other is refused at ``before_train``. Every skipped step is logged
    as a warning with its iteration and counts (the total is kept in the
    message hub as ``skipped_steps``, so it survives ``--resume``). A finite
    loss with ``nonfinite_affinity`` > 0 (images whose EHM masks fell back
    to depth 0) is logged as a warning; after non-finite losses it is part
    of the error.

    Args:
        max_consecutive_nonfinite (int): Non-finite iterations in a row
            that stop training. Defaults to 3.
    """

    priority = 'NORMAL'  # after RuntimeInfoHook, before CheckpointHook

    def __init__(self, max_consecutive_nonfinite: int = 3) -> None:
        if (not isinstance(max_consecutive_nonfinite, int)
                or max_consecutive_nonfinite < 1):
            raise ValueError('max_consecutive_nonfinite must be an int >= '
                             f'1, got {max_consecutive_nonfinite!r}')
        self.max_consecutive_nonfinite = max_consecutive_nonfinite
        self.consecutive = 0
        self.last_finite: Optional[Tuple[int, float]] = None

    def before_train(self, runner) -> None:
        """Refuse an optimizer wrapper that would step on a NaN loss.

        Args:
            runner (Runner): The runner of the training process.

        Raises:
            TypeError: The optimizer wrapper does not skip non-finite
                steps.
        """
        for name, wrapper in self._wrappers(runner):
            if not isinstance(wrapper, NonFiniteSkipMixin):
                raise TypeError(
                    f'DivergenceGuardHook needs an optimizer wrapper that '
                    f'skips non-finite steps, got {type(wrapper).__name__}'
                    f'{name}: set optim_wrapper.type to '
                    "'NonFiniteSkipOptimWrapper' (for OptimWrapper) or "
                    "'NonFiniteSkipAmpOptimWrapper' (for AmpOptimWrapper), "
                    'or remove the guard with '
                    'default_hooks.divergence_guard=None.')

    @staticmethod
    def _wrappers(runner) -> Sequence[Tuple[str, object]]:
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, OptimWrapperDict):
            return [(f' ({key})', value) for key, value in wrapper.items()]
        return [('', wrapper)]

    def _scalar(self, runner, key: str) -> Optional[float]:
        """The current host value of a logged scalar, or None."""
        scalars = runner.message_hub.log_scalars
        if key not in scalars:
            return None
        return float(scalars[key].current())

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        """Check the loss the runner logged for this iteration.

        Args:
            runner (Runner): The runner of the training process.
            batch_idx (int): The index of the batch in the epoch.
            data_batch (dict, optional): The batch. Defaults to None.
            outputs (dict, optional): The model's ``log_vars``. Defaults to
                None.

        Raises:
            TrainingDivergedError: ``max_consecutive_nonfinite`` iterations
                in a row had a non-finite loss (or clipped gradient norm).
        """
        loss = self._scalar(runner, 'train/loss')
        if loss is None:
            return
        iteration = runner.iter + 1
        affinity = self._scalar(runner, 'train/nonfinite_affinity')
        skipped_for_norm = any(
            getattr(wrapper, 'skipped_for_grad_norm', False)
            for _, wrapper in self._wrappers(runner))
        if math.isfinite(loss) and not skipped_for_norm:
            self.consecutive = 0
            self.last_finite = (iteration, loss)
            if affinity:
                runner.logger.warning(
                    f'Iteration {iteration}: the teacher affinity of '
                    f'{affinity:g} image(s) held NaN or inf; their masks '
                    'fell back to depth 0 (the loss is finite).')
            return
        self.consecutive += 1
        hub = runner.message_hub
        total = int(hub.get_info('skipped_steps', 0)) + 1
        hub.update_info('skipped_steps', total)
        what = ('the loss is' if not math.isfinite(loss) else
                'the clipped gradient norm is')
        runner.logger.warning(
            f'Iteration {iteration}: {what} not finite (loss {loss}); '
            f'optimizer step skipped ({self.consecutive} in a row, '
            f'{total} in this run).')
        if self.consecutive >= self.max_consecutive_nonfinite:
            raise TrainingDivergedError(
                self._message(runner, iteration, affinity))

    def _message(self, runner, iteration: int,
                 affinity: Optional[float]) -> str:
        """The error of a diverged run."""
        if self.last_finite is None:
            last = 'No finite loss was seen in this run.'
        else:
            last = (f'The last finite loss was {self.last_finite[1]:.6g} '
                    f'at iteration {self.last_finite[0]}.')
        affinity_text = ''
        if affinity:
            affinity_text = (
                f' The teacher affinity of {affinity:g} image(s) held NaN '
                'or inf in the last iteration (EHM masks fell back to '
                'depth 0).')
        return (f'Training diverged at iteration {iteration}: the loss was '
                f'not finite in {self.consecutive} iterations in a row '
                f'(max_consecutive_nonfinite={self.max_consecutive_nonfinite}'
                '); their optimizer steps were skipped, so the weights are '
                f'those after the last finite step. {last}{affinity_text} '
                f'{last_checkpoint_text(runner)} {ADVICE}')
