# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Full (consolidated) state dicts of FSDP2-sharded models and optimizers.

FSDP2 keeps each parameter as a ``DTensor`` sharded on dim 0; its state
dict holds the shards. A checkpoint that converters, fine-tuning configs
and a different number of ranks can read holds whole tensors under the
unsharded names instead. The functions here convert both ways, tensor by
tensor, with the same keys as an unsharded model:

* :func:`gather_full_tensors`: ``DTensor`` values -> whole host tensors
  (one all-gather per tensor, every rank in the same order);
* :func:`shard_like`: whole tensors -> ``DTensor`` values sharded like the
  parameters they belong to (each rank slices its own part, no
  communication);
* :func:`register_full_state_dict_hooks` puts both on a module's
  ``state_dict`` / ``load_state_dict`` (so mmengine's checkpoint code
  reads and writes whole tensors), :func:`register_full_optim_state_hooks`
  on an optimizer's;
* :func:`gathered_state`: gather both on every rank at once and let the
  state dicts taken inside the block (on one rank, e.g. mmengine's
  rank-0-only ``Runner.save_checkpoint``) return the gathered copies
  without communicating;
* :func:`state_dict_mode`: inside the block the hooks leave the state
  dicts sharded (``'sharded'``, for ``torch.distributed.checkpoint``) or
  empty (``'left_out'``, the small file beside a distributed checkpoint).
"""
import contextlib
from typing import Dict, Iterator, List, MutableMapping, Union

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor

# Marks an optimizer whose state dict hooks are registered.
FULL_OPTIM_STATE_FLAG = '_ehm_full_state_dict'
# Attribute holding a state dict gathered by `gathered_state`.
GATHERED_ATTR = '_ehm_gathered_state'
# Attribute holding the mode set by `state_dict_mode`.
MODE_ATTR = '_ehm_state_dict_mode'
STATE_DICT_MODES = ('sharded', 'left_out')


def gather_full_tensors(state: MutableMapping, to_cpu: bool = True) -> None:
    """Replace every ``DTensor`` value of ``state`` by its whole tensor.

    A collective: every rank must call it with the same keys in the same
    order.

    Args:
        state (MutableMapping): A state dict, changed in place.
        to_cpu (bool): Move each gathered tensor to the host right away,
            so the device holds one whole tensor at a time.
            Defaults to True.
    """
    for key, value in state.items():
        if isinstance(value, DTensor):
            full = value.full_tensor()
            state[key] = full.cpu() if to_cpu else full


def shard_like(value: Tensor, param: Tensor) -> Tensor:
    """``value`` sharded as ``param`` when ``param`` is a ``DTensor``.

    Args:
        value (Tensor): A whole tensor of ``param``'s shape (or anything
            else, returned unchanged).
        param (Tensor): The parameter the value is for.

    Returns:
        Tensor: A ``DTensor`` on ``param``'s mesh and placements holding
        this rank's part of ``value`` (sliced locally, no communication),
        or ``value`` when there is nothing to shard.
    """
    if (not isinstance(param, DTensor) or isinstance(value, DTensor)
            or not isinstance(value, Tensor) or value.shape != param.shape):
        return value
    return distribute_tensor(
        value.to(param.device_mesh.device_type),
        param.device_mesh,
        param.placements,
        src_data_rank=None)


def _full_state_dict_hook(module: nn.Module, state_dict: Dict, prefix: str,
                          local_metadata: Dict) -> None:
    """``state_dict`` post-hook: whole host tensors instead of shards."""
    mode = getattr(module, MODE_ATTR, None)
    if mode == 'left_out':
        state_dict.clear()
        return
    if mode == 'sharded':
        return
    gathered = getattr(module, GATHERED_ATTR, None)
    if gathered is not None:  # taken by `gathered_state`: no collective
        state_dict.update((prefix + k, v) for k, v in gathered.items())
        return
    gather_full_tensors(state_dict)


def _shard_state_dict_pre_hook(module: nn.Module, state_dict: Dict,
                               prefix: str, *args) -> None:
    """``load_state_dict`` pre-hook: shard the whole tensors as the model."""
    if hasattr(module, 'reshard'):  # load into the shards, not a gathered copy
        module.reshard()
    for name, param in module.named_parameters(prefix=prefix[:-1]):
        if name in state_dict:
            state_dict[name] = shard_like(state_dict[name], param)


def register_full_state_dict_hooks(module: nn.Module) -> None:
    """Make ``module``'s state dict hold whole tensors, both ways.

    ``module.state_dict()`` (and mmengine's ``get_state_dict``) then gives
    the same keys and whole tensors as the unsharded model, on the host,
    on every rank (a collective); ``load_state_dict`` (torch's or
    mmengine's) takes such a state dict and keeps each rank's part.

    Args:
        module (nn.Module): The root of an FSDP2-sharded model.
    """
    module._register_state_dict_hook(_full_state_dict_hook)
    module._register_load_state_dict_pre_hook(
        _shard_state_dict_pre_hook, with_module=True)


def _optimizer_params(optimizer: torch.optim.Optimizer) -> List[Tensor]:
    """The parameters in the order of the optimizer's state dict indices."""
    return [p for group in optimizer.param_groups for p in group['params']]


def _full_optim_state_hook(optimizer: torch.optim.Optimizer,
                           state_dict: Dict) -> Dict:
    """``Optimizer.state_dict`` post-hook: whole host tensors."""
    mode = getattr(optimizer, MODE_ATTR, None)
    if mode == 'left_out':
        return dict(state_dict, state={})
    if mode == 'sharded':
        return state_dict
    gathered = getattr(optimizer, GATHERED_ATTR, None)
    if gathered is not None:  # taken by `gathered_state`: no collective
        return dict(state_dict, state=gathered['state'])
    state = {}
    for index in sorted(state_dict['state']):
        # a copy: torch's state dict shares these dicts with the optimizer
        state[index] = dict(state_dict['state'][index])
        gather_full_tensors(state[index])
    return dict(state_dict, state=state)


def _shard_optim_state_pre_hook(optimizer: torch.optim.Optimizer,
                                state_dict: Dict) -> Dict:
    """``Optimizer.load_state_dict`` pre-hook: shard as the parameters."""
    if getattr(optimizer, MODE_ATTR, None) == 'sharded':
        return state_dict  # already shards (and maybe keyed by name)
    params = _optimizer_params(optimizer)
    state = {}
    for index, values in state_dict['state'].items():
        param = params[int(index)]
        state[index] = {
            name: shard_like(value, param)
            for name, value in values.items()
        }
    return dict(state_dict, state=state)


def register_full_optim_state_hooks(optimizer: torch.optim.Optimizer) -> None:
    """Make an optimizer's state dict hold whole tensors, both ways.

    ``state_dict()`` gathers each sharded state tensor (``exp_avg`` ...)
    to a whole host tensor (a collective), keyed as torch keys it (by
    parameter index), so it is the state dict of the unsharded model's
    optimizer; ``load_state_dict`` shards such a state like the
    parameters. Registered once; a second call does nothing.

    Args:
        optimizer (torch.optim.Optimizer): The optimizer of an
            FSDP2-sharded model.
    """
    if getattr(optimizer, FULL_OPTIM_STATE_FLAG, False):
        return
    optimizer.register_state_dict_post_hook(_full_optim_state_hook)
    optimizer.register_load_state_dict_pre_hook(_shard_optim_state_pre_hook)
    setattr(optimizer, FULL_OPTIM_STATE_FLAG, True)


@contextlib.contextmanager
def gathered_state(module: nn.Module,
                   optimizers: List[torch.optim.Optimizer]) -> Iterator[None]:
    """Gather the whole state on every rank; state dicts inside reuse it.

    A collective (every rank enters the block): ``module.state_dict()`` and
    each optimizer's ``state_dict()`` are gathered once; inside the block
    their state dict hooks return these copies, so one rank alone can take
    them (mmengine's ``Runner.save_checkpoint`` runs on rank 0 only).

    Args:
        module (nn.Module): A module with
            :func:`register_full_state_dict_hooks`.
        optimizers (List[torch.optim.Optimizer]): Optimizers with
            :func:`register_full_optim_state_hooks`.
    """
    holders = [module, *optimizers]
    states = [holder.state_dict() for holder in holders]
    try:
        for holder, state in zip(holders, states):
            setattr(holder, GATHERED_ATTR, state)
        yield
    finally:
        for holder in holders:
            setattr(holder, GATHERED_ATTR, None)


@contextlib.contextmanager
def state_dict_mode(holders: List[Union[nn.Module, torch.optim.Optimizer]],
                    mode: str) -> Iterator[None]:
    """Let the state dicts taken inside the block skip the gathering.

    Args:
        holders (List[nn.Module | torch.optim.Optimizer]): Modules with
            :func:`register_full_state_dict_hooks` and optimizers with
            :func:`register_full_optim_state_hooks`.
        mode (str): ``'sharded'``: the state dicts hold this rank's
            ``DTensor`` shards as FSDP2 keeps them (no communication);
            ``'left_out'``: a module's state dict is empty and an
            optimizer's has no ``state`` (its ``param_groups`` stay).

    Raises:
        ValueError: An unknown ``mode``.
    """
    if mode not in STATE_DICT_MODES:
        raise ValueError(f'mode must be one of {STATE_DICT_MODES}, got '
                         f'{mode!r}')
    try:
        for holder in holders:
            setattr(holder, MODE_ATTR, mode)
        yield
    finally:
        for holder in holders:
            setattr(holder, MODE_ATTR, None)
