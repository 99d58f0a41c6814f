# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Launch ``fsdp2_worker.py`` with torchrun and read what its ranks saved."""
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Dict, List

import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

import ehm_mm  # noqa: F401  (registers the models)

HERE = osp.dirname(__file__)
REPO = osp.abspath(osp.join(HERE, '..', '..', '..'))
WORKER = osp.join(HERE, 'fsdp2_worker.py')
CONFIGS = osp.join(REPO, 'tests', 'data', 'configs')


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def torchrun(*args: str, nproc: int = 2) -> None:
    """Run ``fsdp2_worker.py ARGS`` on ``nproc`` CPU processes (gloo).

    Args:
        *args (str): The worker's arguments.
        nproc (int): The number of ranks. Defaults to 2.
    """
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node',
        str(nproc), '--master_port', str(free_port()), WORKER, *args
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1'),
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]


def save_init(config: str, path: str) -> None:
    """Save the initial weights of ``config``'s model (seed 0) to ``path``.

    Args:
        config (str): A config file.
        path (str): The checkpoint to write (``state_dict`` only).
    """
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict()), path)


def load_records(root: str, name: str, nproc: int = 2) -> List[Dict]:
    """Every rank's record of the worker run whose OUT was ``root/name``.

    Args:
        root (str): The runs' folder.
        name (str): The run's name.
        nproc (int): The number of ranks. Defaults to 2.

    Returns:
        List[Dict]: One record per rank.
    """
    return [
        torch.load(osp.join(root, f'{name}.rank{r}.pt'))
        for r in range(nproc)
    ]


def max_diff(a: Dict, b: Dict) -> float:
    """The largest absolute difference of two dicts' tensors (``a``'s keys).
    """
    return max((a[k].double() - b[k].double()).abs().max().item()
               for k in a)
