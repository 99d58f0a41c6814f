# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""What EHM self-supervisors share: the EMA teacher, progress, mask seeds.

``EHMMAE`` and ``EHMSimMIM`` make their masks from a teacher encoder in the
training step; :class:`EMATeacherMixin` holds the parts that do not depend
on the algorithm.
"""
import contextlib
import hashlib
import logging
import math
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.dist import get_rank
from mmengine.logging import MessageHub, print_log
from mmengine.model import ExponentialMovingAverage
from torch import Tensor, nn
from torch.distributed.tensor import DTensor

TEACHER_TYPES = ('ema', 'online')


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for a block, then restore its mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def half_life_momentum(half_life: float, max_iters: int) -> float:
    """The per-iteration EMA momentum of a half-life in units of training.

    ``(1 - m) ** (half_life * max_iters) == 1 / 2``: after ``half_life *
    max_iters`` iterations the teacher keeps half of what it was and has
    taken the other half from the student.

    Args:
        half_life (float): The half-life as a fraction of the run, in
            ``(0, 1]``.
        max_iters (int): The run's total iterations.

    Returns:
        float: ``m = 1 - 2 ** (-1 / (half_life * max_iters))``, in
        ``(0, 0.5]``.

    Raises:
        ValueError: When ``half_life * max_iters`` is less than one
            iteration.
    """
    iters = half_life * max_iters
    if iters < 1:
        raise ValueError(
            f'model.ema_half_life={half_life} of max_iters={max_iters} is '
            f'{iters:g} iterations; the teacher needs a half-life of at '
            'least one iteration (use a larger fraction or ema_momentum)')
    return -math.expm1(-math.log(2) / iters)


def mask_seed(base_seed: int, rank: int, iteration: int,
              stream: str) -> int:
    """A 63-bit seed hashed from ``(base_seed, rank, iteration, stream)``.

    Distinct inputs give unrelated seeds: rank ``r`` at iteration ``i``
    never reuses another rank's or iteration's stream (a linear mix such as
    ``iteration + 7919 * rank`` does, e.g. rank 1 at iteration 0 and rank 0
    at iteration 7919).

    Args:
        base_seed (int): The run's seed (``torch.initial_seed()``).
        rank (int): The process rank.
        iteration (int): The training iteration.
        stream (str): Which draw the seed is for (``'depth'``,
            ``'noise'``).

    Returns:
        int: The seed, in ``[0, 2**63)``.
    """
    text = f'{int(base_seed)}/{int(rank)}/{int(iteration)}/{stream}'
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') & (2**63 - 1)


def _logger_interval(cfg_text: str) -> Optional[int]:
    """The ``LoggerHook`` interval of a run's config text.

    Args:
        cfg_text (str): ``runner.cfg.pretty_text``.

    Returns:
        int, optional: The interval (mmengine's default 10 when the hook
        does not set one); None without a logger hook; 0 when the text
        cannot be read (then the caller logs every iteration, with a
        warning).
    """
    try:
        hooks = Config.fromstring(cfg_text, '.py').get('default_hooks', {})
    except Exception as e:  # a config text mmengine cannot read back
        print_log(f'cannot read the logger interval from the run config '
                  f'({type(e).__name__}: {e}); teacher_distance is computed '
                  'every iteration', logger='current', level=logging.WARNING)
        return 0
    logger = hooks.get('logger')
    return None if logger is None else int(logger.get('interval', 10))


def is_sharded(module: nn.Module) -> bool:
    """Whether any parameter of ``module`` is sharded by FSDP2.

    Args:
        module (nn.Module): The module.

    Returns:
        bool: True when a parameter is a ``DTensor``.
    """
    return any(isinstance(p, DTensor) for p in module.parameters())


def _local(tensor: Tensor) -> Tensor:
    """This rank's shard of a ``DTensor``; any other tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


class EMATeacher(ExponentialMovingAverage):
    """mmengine's EMA with its step counter on the host.

    ``ExponentialMovingAverage.update_parameters`` tests its ``steps``
    buffer (a tensor) on every call, a device sync. This subclass keeps a
    host copy of the count (restored from ``steps`` when a checkpoint is
    loaded) and updates all parameters with one ``torch._foreach_lerp_``,
    the same arithmetic as mmengine's per-tensor ``lerp_``. The state dict
    is mmengine's: ``module.*`` and ``steps``.

    Sharded by FSDP2 (teacher and student alike, e.g. by
    :class:`~ehm_mm.models.wrappers.FSDP2Wrapper`), the average and the
    distance run over each rank's local shards (no all-gather); the
    distance sums the ranks' squared norms with one all-reduce.

    Args:
        model (nn.Module): The model to average.
        momentum (float, optional): ``teacher = (1 - m) * teacher + m *
            student``, in ``(0, 1)``. None leaves it to be set (as
            ``self.momentum``) before the first average, e.g. from a
            half-life once the run's length is known. Defaults to None.
    """

    def __init__(self, model: nn.Module,
                 momentum: Optional[float] = None) -> None:
        # mmengine checks the range; a momentum set later is checked by
        # whoever sets it (`half_life_momentum`).
        super().__init__(model, momentum=0.5 if momentum is None else momentum)
        self.momentum: Optional[float] = momentum
        self.num_updates = 0  # host copy of `steps`

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Copy (first call) or average the parameters of ``model``.

        Args:
            model (nn.Module): The student, with the same parameter names.
        """
        if is_sharded(self.module):
            self._update_local_shards(model)
            return
        source = dict(model.named_parameters())
        names = list(self.avg_parameters)
        if self.num_updates == 0:
            torch._foreach_copy_(
                [self.avg_parameters[k].data for k in names],
                [source[k].data for k in names])
        elif self.num_updates % self.interval == 0:
            if self.momentum is None:
                raise RuntimeError('EMATeacher: momentum is not set')
            names = [k for k in names
                     if self.avg_parameters[k].dtype.is_floating_point]
            torch._foreach_lerp_(
                [self.avg_parameters[k].data for k in names],
                [source[k].data.to(self.avg_parameters[k].device)
                 for k in names], self.momentum)
        self._copy_buffers(model)
        self.steps.add_(1)
        self.num_updates += 1

    def _copy_buffers(self, model: nn.Module) -> None:
        """Copy the buffers of ``model`` (FSDP2 leaves them whole)."""
        buffers = list(self.module.buffers())
        if buffers:
            torch._foreach_copy_(
                [b.data for b in buffers],
                [b.data.to(a.device) for a, b in zip(buffers,
                                                     model.buffers())])

    @torch.no_grad()
    def relative_distance(self, model: nn.Module) -> torch.Tensor:
        """``||teacher - student|| / ||student||`` over the parameters.

        The L2 norms run over all floating-point parameters together, on
        the device (a few ``_foreach`` kernels, no host read).

        Args:
            model (nn.Module): The student, with the same parameter names.

        Returns:
            torch.Tensor: A float32 scalar on the teacher's device.
        """
        if is_sharded(self.module):
            return self._sharded_relative_distance(model)
        source = dict(model.named_parameters())
        names = [k for k, v in self.avg_parameters.items()
                 if v.dtype.is_floating_point]
        teacher = [self.avg_parameters[k].data for k in names]
        student = [source[k].data.to(t.device) for k, t in zip(names, teacher)]
        gap = torch._foreach_sub(teacher, student)
        gap_norm = torch.stack(torch._foreach_norm(gap)).float().norm()
        norm = torch.stack(torch._foreach_norm(student)).float().norm()
        return gap_norm / norm

    def _shard_pairs(self, model: nn.Module) -> List[Tuple[Tensor, Tensor]]:
        """``(teacher, student)`` local tensors of each floating parameter.

        A parameter sharded by FSDP2 (a ``DTensor``) gives its local shard;
        one that is whole on every rank (e.g. in the root group while the
        root is gathered) gives itself. Teacher and student share names
        and sharding, so their local tensors match element by element.
        """
        source = dict(model.named_parameters())
        pairs = []
        for name, teacher in self.module.named_parameters():
            student = source[name]
            if isinstance(teacher, DTensor) != isinstance(student, DTensor):
                raise RuntimeError(
                    f'EMATeacher: teacher and student parameter {name!r} are '
                    'not sharded alike (one is a DTensor, the other not)')
            if teacher.dtype.is_floating_point:
                pairs.append((teacher, student))
        return pairs

    def _update_local_shards(self, model: nn.Module) -> None:
        """:meth:`update_parameters` for FSDP2-sharded parameters.

        One ``torch._foreach_copy_`` (first call) or ``_foreach_lerp_`` over
        this rank's local shards: no communication, each rank averages the
        slice it owns.

        Raises:
            RuntimeError: A parameter is gathered (not a ``DTensor``): an
                update of the gathered copy would be lost when it is freed;
                reshard first (``FSDP2Wrapper.step_teacher`` does).
        """
        gathered = [n for (n, t) in self.module.named_parameters()
                    if not isinstance(t, DTensor)]
        if gathered:
            raise RuntimeError(
                f'EMATeacher: {gathered[0]!r} is gathered by FSDP2 (not a '
                'DTensor); reshard the model before the teacher update')
        pairs = self._shard_pairs(model)
        teacher = [_local(t).data for t, _ in pairs]
        student = [_local(s).data for _, s in pairs]
        if self.num_updates == 0:
            torch._foreach_copy_(teacher, student)
        elif self.num_updates % self.interval == 0:
            if self.momentum is None:
                raise RuntimeError('EMATeacher: momentum is not set')
            torch._foreach_lerp_(teacher, student, self.momentum)
        self._copy_buffers(model)
        self.steps.add_(1)
        self.num_updates += 1

    def _sharded_relative_distance(self, model: nn.Module) -> Tensor:
        """:meth:`relative_distance` for FSDP2-sharded parameters.

        Squared norms of the local shards are summed over the ranks (one
        all-reduce of two numbers); parameters whole on every rank count
        once.
        """
        sharded = torch.zeros(2, dtype=torch.float32, device=self.steps.device)
        whole = torch.zeros_like(sharded)
        for is_dtensor, total in ((True, sharded), (False, whole)):
            pairs = [(t, s) for t, s in self._shard_pairs(model)
                     if isinstance(t, DTensor) == is_dtensor]
            if not pairs:
                continue
            teacher = [_local(t).data for t, _ in pairs]
            student = [_local(s).data for _, s in pairs]
            gap = torch._foreach_sub(teacher, student)
            for i, tensors in enumerate((gap, student)):
                norms = torch.stack(torch._foreach_norm(tensors)).float()
                total[i] = norms.square().sum()
        group = next(p for p in self.module.parameters()
                     if isinstance(p, DTensor)).device_mesh.get_group()
        dist.all_reduce(sharded, group=group)
        gap_sq, norm_sq = (sharded + whole).unbind()
        return gap_sq.sqrt() / norm_sq.sqrt()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args,
                              **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + 'steps' in state_dict:  # one host read, at load time
            self.num_updates = int(state_dict[prefix + 'steps'])


class EMATeacherMixin:
    """EMA teacher of ``self.backbone``, training progress and mask seeds.

    For a :class:`~mmpretrain.models.BaseSelfSupervisor` subclass whose
    masks come from a teacher encoder (put the mixin first in the bases):

    * :meth:`init_teacher` validates the options and makes ``self.teacher``,
      an :class:`EMATeacher` copy of the backbone (``'ema'``), or None to
      use the student itself without gradients (``'online'``); the teacher
      has no gradients, so neither the optimizer nor DDP touches it, and it
      stays in eval mode (:meth:`train`); :meth:`init_weights` starts it as
      a copy of the initialised student;
    * :meth:`update_teacher`, called once per training step before the
      masks are made, with the student as the last optimizer step left it
      (the first update copies the student); with ``ema_half_life`` it
      first resolves the momentum from the run's ``max_iters``;
    * :meth:`teacher_log_vars`: the teacher-student distance to log;
    * :meth:`current_progress` reads ``iter / max_iters`` from mmengine's
      ``MessageHub``, so epoch- and iteration-based loops and resumed runs
      see the right value;
    * :meth:`mask_seed` / :meth:`_mask_generator`: this iteration's seeds
      (:func:`mask_seed`), so a resumed run draws the masks an
      uninterrupted one would and no two ranks share a stream.

    The teacher's timescale is set by one of two options:

    * ``ema_momentum`` ``m``: ``teacher = (1 - m) * teacher + m * student``
      every iteration; its half-life, ``ln 2 / -ln(1 - m)`` iterations, is
      a different share of a short and a long run;
    * ``ema_half_life`` ``h``: the half-life as a fraction of the run.
      At the first training step ``m = 1 - 2 ** (-1 / (h * max_iters))``
      (:func:`half_life_momentum`), ``max_iters`` read from the message
      hub (a host int the runner put there). A resumed run computes the
      same ``m`` (same config, same ``max_iters``); a run resumed with a
      different ``max_iters`` gets the half-life of its new length.

    Gradient accumulation over ``k`` iterations (mmengine's
    ``OptimWrapper(accumulative_counts=k)``): the teacher moves every
    iteration. Within an accumulation window the student does not change,
    so the window's ``k`` moves compound to one move of momentum
    ``1 - (1 - m) ** k`` towards the student of the last optimizer step.
    The half-life ``h * max_iters`` iterations is therefore the same
    fraction ``h`` of the run's optimizer steps: ``ema_half_life`` means
    the same with and without accumulation (a per-step ``ema_momentum``
    does not: its half-life in optimizer steps shrinks ``k`` times).
    """

    backbone: nn.Module
    teacher: Optional[EMATeacher]
    # True when a wrapper moves the teacher itself before the forward
    # (FSDP2Wrapper: on the local shards, before the root group is
    # gathered); then update_teacher() does nothing.
    teacher_updated_by_wrapper: bool = False

    def init_teacher(self,
                     teacher: str,
                     ema_momentum: Optional[float],
                     ema_half_life: Optional[float] = None,
                     needed: bool = True) -> None:
        """Validate the options and build the teacher.

        Args:
            teacher (str): ``'ema'`` or ``'online'``.
            ema_momentum (float, optional): EMA momentum in mmengine's
                convention, ``teacher = (1 - m) * teacher + m * student``
                per iteration, in ``(0, 1)``; None with ``ema_half_life``.
            ema_half_life (float, optional): The teacher's half-life as a
                fraction of the run's iterations, in ``(0, 1]``; needs
                ``ema_momentum=None``. Defaults to None.
            needed (bool): False when the masks take nothing from a teacher
                (``affinity_source='pixels'``): the options are still
                checked, but no EMA copy is built, nothing is updated or
                logged, the state dict holds no ``teacher.*`` and
                ``teacher_type`` is None. Defaults to True.

        Raises:
            ValueError: An unknown ``teacher``, both or (for ``'ema'``)
                neither timescale given, or one out of its range.
        """
        if teacher not in TEACHER_TYPES:
            raise ValueError(f'model.teacher must be one of {TEACHER_TYPES}, '
                             f'got {teacher!r}')
        if ema_momentum is not None and ema_half_life is not None:
            raise ValueError(
                'model.ema_momentum and model.ema_half_life are two ways to '
                'set the teacher\'s timescale; give one (to use '
                f'ema_half_life={ema_half_life!r}, set ema_momentum=None)')
        if ema_half_life is not None:
            if (isinstance(ema_half_life, bool)
                    or not isinstance(ema_half_life, (int, float))
                    or not 0 < ema_half_life <= 1):
                raise ValueError(
                    'model.ema_half_life is a fraction of the run in (0, 1], '
                    f'got {ema_half_life!r}')
        elif ema_momentum is not None:
            if isinstance(ema_momentum, bool) or not 0 < ema_momentum < 1:
                raise ValueError('model.ema_momentum must be in (0, 1), got '
                                 f'{ema_momentum!r}')
        elif teacher == 'ema':
            raise ValueError(
                "model.teacher='ema' needs ema_momentum (per iteration) or "
                'ema_half_life (a fraction of the run); both are None')
        self.teacher_type = teacher if needed else None
        self.ema_momentum = ema_momentum
        self.ema_half_life = ema_half_life
        if needed and teacher == 'ema':
            self.teacher = EMATeacher(self.backbone, ema_momentum)
            self.teacher.eval()
        else:
            self.teacher = None
        self._warned_no_progress = False

    def teacher_encoder(self) -> nn.Module:
        """The encoder the masks come from: the EMA copy or the student.

        Returns:
            nn.Module: ``teacher.module`` or ``backbone``; run it under
            :func:`eval_mode` and without gradients.
        """
        return self.backbone if self.teacher is None else self.teacher.module

    def update_teacher(self) -> None:
        """One EMA step towards the student (nothing for ``'online'``).

        Called by the training step; does nothing when
        ``teacher_updated_by_wrapper`` (the wrapper calls
        :meth:`step_teacher` before the forward instead).
        """
        if not self.teacher_updated_by_wrapper:
            self.step_teacher()

    def step_teacher(self) -> None:
        """One EMA step towards the student (nothing for ``'online'``).

        With ``ema_half_life``, the first call resolves the momentum
        (:meth:`resolve_teacher_momentum`).
        """
        if self.teacher is None:
            return
        if self.teacher.momentum is None:
            self.teacher.momentum = self.resolve_teacher_momentum()
        self.teacher.update_parameters(self.backbone)

    def resolve_teacher_momentum(self) -> float:
        """``ema_half_life`` as a per-iteration momentum for this run.

        Returns:
            float: :func:`half_life_momentum` of ``ema_half_life`` and the
            message hub's ``max_iters``.

        Raises:
            RuntimeError: The hub holds no ``max_iters`` (no runner).
            ValueError: The half-life is less than one iteration.
        """
        max_iters = MessageHub.get_current_instance().get_info('max_iters')
        if not max_iters:
            raise RuntimeError(
                f'{type(self).__name__}: ema_half_life is a fraction of the '
                'run, but the MessageHub holds no `max_iters` (not trained '
                'by an mmengine Runner?); set it or use ema_momentum')
        momentum = half_life_momentum(self.ema_half_life, int(max_iters))
        print_log(
            f'{type(self).__name__}: ema_half_life={self.ema_half_life} of '
            f'max_iters={max_iters} = {self.ema_half_life * max_iters:g} '
            f'iterations -> ema momentum {momentum:.6g} per iteration',
            logger='current')
        return momentum

    def teacher_log_vars(self, always: bool = False
                         ) -> Dict[str, torch.Tensor]:
        """What to log about the teacher: its distance to the student.

        ``||teacher - student|| / ||student||`` is a pass over all encoder
        parameters, so a step computes it only when the logger will write
        it (:meth:`logs_this_iter`) or when asked (``always``).

        Args:
            always (bool): Compute it whatever the iteration.
                Defaults to False.

        Returns:
            Dict[str, torch.Tensor]: ``teacher_distance``, a device scalar
            (:meth:`EMATeacher.relative_distance`); empty for ``'online'``
            and on iterations the logger skips.
        """
        if self.teacher is None or not (always or self.logs_this_iter()):
            return {}
        return dict(
            teacher_distance=self.teacher.relative_distance(self.backbone))

    def logs_this_iter(self) -> bool:
        """Whether the runner's ``LoggerHook`` writes this iteration's log.

        As ``LoggerHook.after_train_iter``: after the iteration of index
        ``i`` within its epoch when ``(i + 1) % interval == 0``, and after
        an epoch's last iteration; ``interval`` is ``default_hooks.logger``'s
        in the run's config, which mmengine's ``RuntimeInfoHook`` puts into
        the ``MessageHub`` (read once per run); the epoch length is
        ``max_iters / max_epochs`` (an iteration-based loop has one epoch).
        Outside a runner (no config in the hub): every call. Without a
        logger hook: never.

        Returns:
            bool: Whether to compute the logged diagnostics.
        """
        hub = MessageHub.get_current_instance()
        text = hub.get_info('cfg')
        if text is None:
            return True
        if getattr(self, '_logger_cfg', (None, ))[0] != text:
            self._logger_cfg = (text, _logger_interval(text))
        interval = self._logger_cfg[1]
        if interval is None:
            return False
        if interval == 0:  # unknown: every iteration
            return True
        cur_iter = hub.get_info('iter') or 0
        per_epoch = (hub.get_info('max_iters') or 0) // max(
            hub.get_info('max_epochs') or 1, 1)
        inner = cur_iter % per_epoch if per_epoch > 0 else cur_iter
        return (inner + 1) % interval == 0 or inner + 1 == per_epoch

    def train(self, mode: bool = True):
        """Set train/eval mode; the EMA teacher always stays in eval mode.

        Args:
            mode (bool): Training mode. Defaults to True.

        Returns:
            nn.Module: self.
        """
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def init_weights(self) -> None:
        """Initialize the weights, then start the teacher as a copy."""
        super().init_weights()
        if self.teacher is not None:
            self.teacher.module.load_state_dict(self.backbone.state_dict())

    def current_progress(self) -> float:
        """Training progress ``iter / max_iters`` from the message hub.

        Returns:
            float: Progress in ``[0, 1]``; 0 (with a one-time warning) when
            the hub holds no training loop information, e.g. outside a
            runner.
        """
        hub = MessageHub.get_current_instance()
        cur_iter = hub.get_info('iter')
        max_iters = hub.get_info('max_iters')
        if cur_iter is None or not max_iters:
            if not self._warned_no_progress:
                print_log(
                    f'{type(self).__name__}: no `iter` / `max_iters` in the '
                    'MessageHub (not run by a Runner?); using progress 0.',
                    logger='current',
                    level=logging.WARNING)
                self._warned_no_progress = True
            return 0.0
        return min(max(cur_iter / max_iters, 0.0), 1.0)

    def mask_seed(self, stream: str) -> int:
        """This iteration's seed of one random stream (:func:`mask_seed`).

        Args:
            stream (str): ``'depth'`` or ``'noise'``.

        Returns:
            int: The seed.
        """
        cur_iter = MessageHub.get_current_instance().get_info('iter') or 0
        return mask_seed(torch.initial_seed(), get_rank(), cur_iter, stream)

    def _mask_generator(self, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded for this rank and iteration."""
        generator = torch.Generator(device=device)
        generator.manual_seed(self.mask_seed('noise'))
        return generator
