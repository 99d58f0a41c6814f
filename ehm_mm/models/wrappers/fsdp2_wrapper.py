# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHM-MAE and EHM-SimMIM sharded with PyTorch FSDP2, EMA teacher included."""
import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.device import get_device
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import MODEL_WRAPPERS, OPTIM_WRAPPERS
from mmpretrain.models import SwinTransformer, VisionTransformer
from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from ..masking.affinity import resolve_layers
from ..selfsup import EHMMAE, EHMSimMIM
from .sharded_state import (
    FULL_OPTIM_STATE_FLAG,
    register_full_state_dict_hooks,
)

DTYPES = dict(bfloat16=torch.bfloat16, float16=torch.float16,
              float32=torch.float32)


def uses_fsdp2(cfg: Config) -> bool:
    """Whether a config selects :class:`FSDP2Wrapper`.

    Args:
        cfg (Config): A run's config.

    Returns:
        bool: ``model_wrapper_cfg.type`` names the wrapper.
    """
    wrapper = cfg.get('model_wrapper_cfg') or {}
    return wrapper.get('type') in ('FSDP2Wrapper', FSDP2Wrapper)


def check_sharded_launch(cfg: Config, launcher: str) -> None:
    """Refuse a config that selects FSDP2 sharding on a single process.

    mmengine's runner ignores ``model_wrapper_cfg`` without a distributed
    launch, so such a run would train the whole model unsharded on one
    device.

    Args:
        cfg (Config): The run's config.
        launcher (str): The job launcher (``'none'``: one process).

    Raises:
        RuntimeError: The config selects :class:`FSDP2Wrapper` and the
            launcher is ``'none'``.
    """
    if uses_fsdp2(cfg) and launcher == 'none':
        raise RuntimeError(
            'model_wrapper_cfg selects FSDP2Wrapper (sharded training), which '
            'needs a distributed launch: use `bash tools/dist_train.sh CONFIG '
            'NUM_GPUS` (torchrun, --launcher pytorch) or tools/slurm_train.sh '
            '(--launcher slurm), not --launcher none')


def check_sharded_precision(cfg: Config, amp_flag: bool = False) -> None:
    """Refuse mmengine's AMP (autocast and a loss scaler) with FSDP2.

    :class:`FSDP2Wrapper` does its own mixed precision
    (``mixed_precision``: parameters gathered and computed in bf16,
    gradients reduced in fp32, fp32 shards and optimizer state). An
    ``AmpOptimWrapper`` on top would autocast inside it and scale the
    loss with a ``GradScaler`` that does not know the gradients are
    sharded, so the two are not combined.

    Args:
        cfg (Config): The run's config.
        amp_flag (bool): ``tools/train.py --amp`` was given.
            Defaults to False.

    Raises:
        ValueError: The config selects :class:`FSDP2Wrapper` and ``--amp``
            was given or ``optim_wrapper.type`` is an ``AmpOptimWrapper``.
    """
    if not uses_fsdp2(cfg):
        return
    advice = ("FSDP2Wrapper does its own mixed precision: set "
              "model_wrapper_cfg.mixed_precision=dict(param_dtype="
              "'bfloat16', reduce_dtype='float32') (configs/_base_/"
              "ehm_fsdp.py does) with a plain (NonFiniteSkip)OptimWrapper")
    if amp_flag:
        raise ValueError(f'--amp cannot be used with this config: {advice}, '
                         'and leave --amp out')
    wrapper = (cfg.get('optim_wrapper') or {}).get('type', 'OptimWrapper')
    if isinstance(wrapper, str):
        wrapper = OPTIM_WRAPPERS.get(wrapper)
    if isinstance(wrapper, type) and issubclass(wrapper, AmpOptimWrapper):
        raise ValueError(
            f'optim_wrapper.type {wrapper.__name__} (autocast and a loss '
            f'scaler) cannot be used with FSDP2Wrapper: {advice}')


def encoder_blocks(encoder: nn.Module) -> List[nn.Module]:
    """The transformer blocks of an encoder, one FSDP group each.

    Args:
        encoder (nn.Module): An mmpretrain ``VisionTransformer`` (its
            ``layers``) or ``SwinTransformer`` (every stage's ``blocks``).

    Returns:
        List[nn.Module]: The blocks, in forward order.

    Raises:
        TypeError: ``encoder`` is neither.
    """
    if isinstance(encoder, VisionTransformer):
        return list(encoder.layers)
    if isinstance(encoder, SwinTransformer):
        return [block for stage in encoder.stages for block in stage.blocks]
    raise TypeError('FSDP2Wrapper shards ViT (`layers`) and Swin '
                    '(`stages[i].blocks`) encoders, got '
                    f'{type(encoder).__name__}')


def reads_teacher_attention(model: nn.Module) -> bool:
    """Whether the masks' affinity is the teacher's ViT attention.

    Then the affinity runs the deepest chosen layer's ``ln1`` and
    ``attn.qkv`` outside that layer's forward.

    Args:
        model (nn.Module): An ``EHMMAE`` or ``EHMSimMIM``.

    Returns:
        bool: EHM-MAE, or EHM-SimMIM with ``affinity='attention'``.
    """
    return isinstance(model, EHMMAE) or getattr(model, 'affinity',
                                                None) == 'attention'


def _dtype(name: Optional[str], what: str) -> Optional[torch.dtype]:
    """A dtype named in the config, or None."""
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(f'model_wrapper_cfg.mixed_precision.{what} must be '
                         f'one of {sorted(DTYPES)} or None, got {name!r}')
    return DTYPES[name]


@MODEL_WRAPPERS.register_module()
class FSDP2Wrapper(nn.Module):
    """Shard an ``EHMMAE`` or ``EHMSimMIM`` with FSDP2 (``fully_shard``).

    Every parameter is split on dim 0 over the ranks of a 1-D
    ``DeviceMesh``: one FSDP group per encoder block (a ViT's
    ``backbone.layers``, every Swin stage's ``blocks``), per decoder block
    (EHM-MAE's ``neck.decoder_blocks``; SimMIM's linear decoder has none)
    and per EMA-teacher block (the same blocks of ``teacher.module``), and
    the root group (embeddings, norms, patch merging, the decoder's
    projections) for the rest. A block's parameters are all-gathered for
    its forward and freed after it (and for its backward), so a rank holds
    its shards plus a few whole blocks.

    The teacher is sharded exactly like the student, so each rank's
    teacher shard matches its student shard element for element: the EMA
    update is one ``torch._foreach_lerp_`` over the local shards, no
    communication (:class:`~ehm_mm.models.selfsup.ema_teacher.EMATeacher`),
    done here before the forward gathers the root group. The teacher's
    forward gathers block by block like the student's. The attention
    affinity (EHM-MAE; EHM-SimMIM on a ViT with ``affinity='attention'``)
    reads the deepest chosen layer's ``q, k`` without running that block,
    so that layer's ``ln1`` and ``attn.qkv`` are groups of their own; the
    feature affinity (EHM-SimMIM on Swin) runs the teacher's whole
    forward.

    The model is initialised (``init_weights``) and rank 0's weights
    broadcast before sharding, as DDP starts from rank 0's weights. Its
    state dict holds whole tensors under the unsharded names (gathered to
    the host on every rank, tensor by tensor) and ``load_state_dict``
    takes whole tensors; with :class:`~ehm_mm.engine.FSDP2Runner`
    (``runner_type='FSDP2Runner'``, required), which makes the optimizer's
    state whole the same way and gathers on every rank before rank 0
    saves, mmengine's checkpoints are consolidated and read by the
    converters unchanged.

    Args:
        module (nn.Module): The model, an ``EHMMAE`` or an ``EHMSimMIM``
            (ViT or Swin encoder); ``teacher='online'`` is refused.
        mixed_precision (dict, optional): ``param_dtype`` (the gathered
            parameters' and the compute dtype, e.g. ``'bfloat16'``) and
            ``reduce_dtype`` (the gradients' reduce-scatter, e.g.
            ``'float32'``); the shards and the optimizer stay float32.
            None computes in the parameters' dtype. Defaults to None.
        activation_checkpointing (bool): Recompute each encoder and decoder
            block's activations in the backward instead of keeping them.
            Defaults to False.
        reshard_after_forward (bool): Free a block's gathered parameters
            after its forward (gathered again for the backward); False
            keeps them until the backward (faster, more memory).
            Defaults to True.
        device_ids (Sequence[int], optional): Accepted for the
            ``model_wrapper_cfg`` that ``tools/train.py`` fills in; the
            device is mmengine's current one. Defaults to None.

    Raises:
        RuntimeError: No process group is initialised (not a distributed
            launch).
        TypeError: ``module`` is not an ``EHMMAE`` or ``EHMSimMIM``.
        ValueError: ``teacher='online'`` or a bad ``mixed_precision``.
    """

    def __init__(self,
                 module: nn.Module,
                 mixed_precision: Optional[Dict[str, Optional[str]]] = None,
                 activation_checkpointing: bool = False,
                 reshard_after_forward: bool = True,
                 device_ids: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                'FSDP2Wrapper needs a distributed launch (no process group is '
                'initialised): use `bash tools/dist_train.sh CONFIG NUM_GPUS` '
                'or tools/slurm_train.sh')
        if not isinstance(module, (EHMMAE, EHMSimMIM)):
            raise TypeError('FSDP2Wrapper shards an EHMMAE or an EHMSimMIM '
                            '(ViT or Swin encoder), got '
                            f'{type(module).__name__}')
        if module.affinity_source == 'teacher' and module.teacher is None:
            raise ValueError(
                "FSDP2Wrapper does not shard teacher='online' (the student "
                "would be read block by block outside its forward); use "
                "teacher='ema'")
        mixed_precision = dict(mixed_precision or {})
        unknown = set(mixed_precision) - {'param_dtype', 'reduce_dtype'}
        if unknown:
            raise ValueError('model_wrapper_cfg.mixed_precision takes '
                             "'param_dtype' and 'reduce_dtype', got "
                             f'{sorted(unknown)}')
        self.mp_policy = MixedPrecisionPolicy(
            param_dtype=_dtype(mixed_precision.get('param_dtype'),
                               'param_dtype'),
            reduce_dtype=_dtype(mixed_precision.get('reduce_dtype'),
                                'reduce_dtype'))
        self.activation_checkpointing = bool(activation_checkpointing)
        self.reshard_after_forward = bool(reshard_after_forward)
        self.module = module
        self._init_and_broadcast()
        self.mesh = init_device_mesh(
            torch.device(get_device()).type, (dist.get_world_size(), ))
        self._shard()
        register_full_state_dict_hooks(module)
        module.teacher_updated_by_wrapper = True

    def _init_and_broadcast(self) -> None:
        """Initialise the whole model and give every rank rank 0's weights.

        The runner's own ``init_weights`` call after wrapping then finds
        the model initialised and only re-copies the teacher.
        """
        # Leave the global random state as it was: the runner's later
        # init draws, the data order and the seeds go on as with DDP.
        with torch.random.fork_rng(devices=[]):
            self.module.init_weights()
        for tensor in self.module.state_dict().values():
            dist.broadcast(tensor, src=0)

    def _shard_kwargs(self) -> Dict[str, Any]:
        return dict(mesh=self.mesh, mp_policy=self.mp_policy,
                    reshard_after_forward=self.reshard_after_forward)

    def _shard(self) -> None:
        """``fully_shard`` the blocks, the teacher's blocks, then the root."""
        model, kwargs = self.module, self._shard_kwargs()
        decoder = getattr(model.neck, 'decoder_blocks', None) or []
        for block in [*encoder_blocks(model.backbone), *decoder]:
            if self.activation_checkpointing:
                checkpoint(block)
            fully_shard(block, **kwargs)
        if model.teacher is not None:
            encoder = model.teacher.module
            blocks = encoder_blocks(encoder)
            if reads_teacher_attention(model):
                deepest = resolve_layers(model.attn_layers, len(blocks))[-1]
                fully_shard(blocks[deepest].ln1, **kwargs)
                fully_shard(blocks[deepest].attn.qkv, **kwargs)
            for block in blocks:
                fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)

    def step_teacher(self) -> None:
        """Move the EMA teacher on the local shards (root group resharded).

        The root group stays gathered after a forward without backward
        (e.g. validation); it is resharded first so the update reaches the
        shards, not a gathered copy.
        """
        self.module.reshard()
        self.module.step_teacher()

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """Teacher update, forward, backward and optimizer step.

        As ``BaseModel.train_step``, with the EMA step first.

        Args:
            data (dict | tuple | list): A batch from the dataloader.
            optim_wrapper (OptimWrapper): Updates the parameters.

        Returns:
            Dict[str, torch.Tensor]: The log variables.

        Raises:
            RuntimeError: The optimizer's state dict is not made whole
                (the config lacks ``runner_type='FSDP2Runner'``).
        """
        if not getattr(optim_wrapper.optimizer, FULL_OPTIM_STATE_FLAG, False):
            raise RuntimeError(
                "FSDP2Wrapper needs runner_type='FSDP2Runner' in the config "
                "(checkpoints would hold rank 0's shards only)")
        with optim_wrapper.optim_context(self):
            data = self.module.data_preprocessor(data, training=True)
            self.step_teacher()
            if isinstance(data, dict):
                losses = self.module(**data, mode='loss')
            else:
                losses = self.module(*data, mode='loss')
        parsed_loss, log_vars = self.module.parse_losses(losses)
        optim_wrapper.update_params(parsed_loss)
        return log_vars

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """The model's ``val_step`` (its forward gathers as in training)."""
        return self.module.val_step(data)

    def test_step(self, data: Union[dict, tuple, list]) -> list:
        """The model's ``test_step``."""
        return self.module.test_step(data)

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """No gradient reduce-scatter (gradient accumulation windows)."""
        self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)
