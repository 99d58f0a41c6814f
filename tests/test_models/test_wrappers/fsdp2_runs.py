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


def assert_resumed_equals_straight(straight: List[Dict],
                                   resumed: List[Dict], start: int,
                                   tol: Dict) -> None:
    """Each rank's run resumed at ``start`` goes on as the straight run.

    Args:
        straight (List[Dict]): The straight run's records, per rank.
        resumed (List[Dict]): The resumed run's records, per rank.
        start (int): The iteration the resumed run started from.
        tol (Dict): ``torch.testing.assert_close`` tolerances.
    """
    for ref, run in zip(straight, resumed):
        assert len(run['loss']) == len(ref['loss']) - start
        torch.testing.assert_close(torch.stack(run['loss']),
                                   torch.stack(ref['loss'][start:]), **tol)
        for a, b in zip(run['mask'], ref['mask'][start:]):
            assert torch.equal(a, b)
        for key, value in ref['state_dict'].items():
            torch.testing.assert_close(run['state_dict'][key], value, **tol)


def assert_same_checkpoint(path: str, ref: str, tol: Dict) -> None:
    """Two checkpoint files hold the same model and optimizer state.

    The model's keys in the same order and values within ``tol``; the
    optimizer state (by parameter index) the same keys and values.

    Args:
        path (str): A checkpoint file.
        ref (str): The checkpoint file it should equal.
        tol (Dict): ``torch.testing.assert_close`` tolerances.
    """
    saved, expected = torch.load(path), torch.load(ref)
    assert list(saved['state_dict']) == list(expected['state_dict'])
    for key, value in expected['state_dict'].items():
        torch.testing.assert_close(saved['state_dict'][key], value, **tol)
    state, expected_state = (saved['optimizer']['state'],
                             expected['optimizer']['state'])
    assert state.keys() == expected_state.keys()
    for index, values in expected_state.items():
        assert state[index].keys() == values.keys()
        for name, value in values.items():
            torch.testing.assert_close(state[index][name], value, **tol)
