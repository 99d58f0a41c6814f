# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Sharded checkpoints of FSDP2 runs (``torch.distributed.checkpoint``).

With ``checkpoint_format='distributed'`` (:class:`~ehm_mm.engine.FSDP2Runner`)
a checkpoint ``iter_N.pth`` is two things side by side:

* ``iter_N.dcp/``: the model's and the optimizers' state as each rank holds
  it, written by every rank in parallel with ``torch.distributed.checkpoint``
  (no rank gathers the whole model);
* ``iter_N.pth``: mmengine's checkpoint file without the model's and the
  optimizer's state (meta, message hub, schedulers, optimizer
  ``param_groups``), written by rank 0; ``meta['distributed_checkpoint']``
  names the folder (``folder``) and the model's state dict keys in order
  (``keys``).

:func:`save_distributed` / :func:`load_distributed` write and read the
folder on every rank (any number of ranks: it is resharded on load);
:func:`distributed_to_full` turns the pair into the whole (consolidated)
checkpoint that ``checkpoint_format='full'`` writes, on one process.
"""
import os
import os.path as osp
import shutil
import tempfile
from collections import OrderedDict
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from mmengine.runner.checkpoint import CheckpointLoader
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from ...utils.atomic_io import atomic_path
from ...utils.checkpoint_digest import DIGEST_KEY, add_tensor_digests
from .sharded_state import state_dict_mode

#: ``meta`` entry of the checkpoint file naming its folder.
META_KEY = 'distributed_checkpoint'
#: Extension of the folder beside a checkpoint file.
FOLDER_EXT = '.dcp'


def distributed_folder(filename: str) -> str:
    """The folder of the distributed checkpoint beside ``filename``.

    Args:
        filename (str): A checkpoint file, e.g. ``work_dir/iter_2.pth``.

    Returns:
        str: ``work_dir/iter_2.dcp``.
    """
    return osp.splitext(filename)[0] + FOLDER_EXT


def _optimizer_key(index: int) -> str:
    return f'optimizer_{index}'


def _is_main() -> bool:
    return dist.get_rank() == 0


def save_distributed(module: nn.Module,
                     optimizers: List[torch.optim.Optimizer],
                     folder: str) -> List[str]:
    """Write the sharded model and optimizer state to ``folder``.

    A collective: every rank writes its shards. The folder is written
    under a temporary name and renamed when every rank has finished, so a
    killed save leaves no half-written folder under the final name.

    Args:
        module (nn.Module): The FSDP2-sharded model (the wrapper's
            ``module``), with :func:`register_full_state_dict_hooks`.
        optimizers (List[torch.optim.Optimizer]): Its optimizers.
        folder (str): Where to write.

    Returns:
        List[str]: The model's state dict keys, in order.
    """
    tmp = folder + '.tmp'
    if _is_main() and osp.isdir(tmp):
        shutil.rmtree(tmp)
    dist.barrier()
    module.reshard()  # the shards, not a gathered root group
    with state_dict_mode([module, *optimizers], 'sharded'):
        state = dict(state_dict=module.state_dict())
        for index, optimizer in enumerate(optimizers):
            state[_optimizer_key(index)] = get_optimizer_state_dict(
                module, optimizer)
    dcp.save(state, checkpoint_id=tmp)
    dist.barrier()
    if _is_main():
        if osp.isdir(folder):
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    dist.barrier()
    return list(state['state_dict'])


def load_distributed(module: nn.Module,
                     optimizers: List[torch.optim.Optimizer],
                     folder: str,
                     load_model: bool = True) -> None:
    """Read ``folder`` into the sharded model and optimizers.

    A collective. Each rank reads the parts of every tensor it holds, so
    the folder loads on any number of ranks.

    Args:
        module (nn.Module): The FSDP2-sharded model.
        optimizers (List[torch.optim.Optimizer]): The optimizers to
            restore (empty: the model only).
        folder (str): A folder written by :func:`save_distributed`.
        load_model (bool): Restore the model too. Defaults to True.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(
            f'distributed checkpoint folder {folder} does not exist (it is '
            'written beside the checkpoint file)')
    module.reshard()
    with state_dict_mode([module, *optimizers], 'sharded'):
        state = {}
        if load_model:
            state['state_dict'] = module.state_dict()
        for index, optimizer in enumerate(optimizers):
            state[_optimizer_key(index)] = get_optimizer_state_dict(
                module, optimizer)
        dcp.load(state, checkpoint_id=folder)
        if load_model:
            module.load_state_dict(state['state_dict'])
        for index, optimizer in enumerate(optimizers):
            set_optimizer_state_dict(module, optimizer,
                                     state[_optimizer_key(index)])


def _optimizer_by_index(state: Dict) -> Dict:
    """An optimizer state dict keyed by parameter name -> by index.

    ``torch.distributed.checkpoint`` keys the state by parameter name;
    torch's ``Optimizer.state_dict`` (and a ``'full'`` checkpoint) by the
    parameter's position in ``param_groups``.
    """
    index = {}
    groups = []
    for group in state['param_groups']:
        ids = []
        for name in group['params']:
            index[name] = len(index)
            ids.append(index[name])
        groups.append(dict(group, params=ids))
    return dict(state={index[name]: value
                       for name, value in state['state'].items()},
                param_groups=groups)


def distributed_to_full(src: str, dst: str) -> Dict:
    """Write the whole checkpoint of a distributed one (one process).

    The result is what ``checkpoint_format='full'`` writes: the model's
    whole tensors under its ``state_dict`` names, the optimizer state by
    parameter index, and the file's other entries; the converters,
    fine-tuning configs and ``--resume`` read it.

    Args:
        src (str): The checkpoint file (``iter_N.pth``) of a distributed
            checkpoint; its folder (``iter_N.dcp``) beside it.
        dst (str): The whole checkpoint to write.

    Returns:
        dict: The checkpoint written.

    Raises:
        ValueError: ``src`` is not the file of a distributed checkpoint.
        FileNotFoundError: ``src`` or its folder does not exist.
    """
    if not osp.isfile(src):
        raise FileNotFoundError(f'checkpoint {src} does not exist')
    checkpoint = CheckpointLoader.load_checkpoint(src, map_location='cpu')
    meta = dict(checkpoint.get('meta') or {})
    entry = meta.pop(META_KEY, None)
    if entry is None:
        raise ValueError(
            f'{src} is not the file of a distributed checkpoint (no '
            f"meta['{META_KEY}']); it is already whole")
    folder = osp.join(osp.dirname(src), entry['folder'])
    if not osp.isdir(folder):
        raise FileNotFoundError(
            f'{src} names the folder {folder}, which does not exist')
    with tempfile.TemporaryDirectory() as tmp:
        whole = osp.join(tmp, 'whole.pth')
        dcp_to_torch_save(folder, whole)
        state = torch.load(whole, map_location='cpu', weights_only=False)
    checkpoint['meta'] = meta
    model = state['state_dict']
    checkpoint['state_dict'] = OrderedDict(
        (key, model[key]) for key in entry['keys'])
    optimizers = sorted(k for k in state if k.startswith('optimizer_'))
    if optimizers:
        saved = checkpoint.get('optimizer') or {}
        whole_optimizers = [_optimizer_by_index(state[_optimizer_key(i)])
                            for i in range(len(optimizers))]
        if 'param_groups' in saved or not saved:  # one OptimWrapper
            checkpoint['optimizer'] = whole_optimizers[0]
        else:  # OptimWrapperDict: {name: state dict}, in order
            checkpoint['optimizer'] = dict(zip(saved, whole_optimizers))
    checkpoint.pop(DIGEST_KEY, None)
    add_tensor_digests(checkpoint)
    with atomic_path(dst) as path:
        torch.save(checkpoint, path)
    return checkpoint
