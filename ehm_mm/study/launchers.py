# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""How the jobs of a study run are started: torchrun or srun.

A :class:`StageLauncher` turns "run ``tools/<tool>.py`` with these
arguments" into the command line of a distributed job: ``torchrun`` with
``N`` processes on this machine (:class:`TorchrunLauncher`; gloo on CPU,
nccl on GPUs, chosen by the tools), or ``srun`` of one such torchrun per
node inside a slurm allocation (:class:`SlurmLauncher`).
:func:`device_slots` partitions the visible GPUs among runs trained side by
side, and :func:`slurm_array_script` writes the array job that runs one
(arm, seed) per task.
"""
import os
import re
import shlex
import sys
from typing import Dict, List, Optional, Sequence, Tuple

_SAFE_NAME = re.compile(r'[A-Za-z0-9_.-]+')


class StageLauncher:
    """Builds the command line of one distributed job of a run.

    Args:
        gpus_per_run (int): Processes (GPUs) per node of each job.
        python (str, optional): The interpreter. Defaults to None, which
            means ``sys.executable``.
    """

    def __init__(self, gpus_per_run: int,
                 python: Optional[str] = None) -> None:
        if gpus_per_run < 1:
            raise ValueError(f'gpus_per_run must be >= 1, got {gpus_per_run}')
        self.gpus_per_run = gpus_per_run
        self.python = python or sys.executable

    def command(self, tool: str, args: Sequence[str]) -> List[str]:
        """The command that runs ``tool`` with ``args`` as one job.

        Args:
            tool (str): Path of the tool script (``tools/train.py``).
            args (Sequence[str]): Its arguments (``--launcher`` is added).

        Returns:
            list[str]: The command.
        """
        raise NotImplementedError


class TorchrunLauncher(StageLauncher):
    """``torchrun --standalone --nproc_per_node N`` on this machine.

    ``--standalone`` picks a free rendezvous port, so runs trained side by
    side (``--jobs``) never collide. The tools get ``--launcher pytorch``
    (nccl on GPUs, gloo without CUDA).
    """

    def rendezvous(self) -> List[str]:
        """torchrun's node and rendezvous arguments."""
        return ['--standalone', '--nnodes=1']

    def command(self, tool: str, args: Sequence[str]) -> List[str]:
        """See :meth:`StageLauncher.command`."""
        return [
            self.python, '-m', 'torch.distributed.run', *self.rendezvous(),
            f'--nproc_per_node={self.gpus_per_run}', tool, *args,
            '--launcher', 'pytorch'
        ]


class SlurmLauncher(TorchrunLauncher):
    """``srun`` one torchrun per node inside the array task's allocation.

    Each node of the run gets one slurm task, a torchrun with one process
    per GPU; several nodes meet at a c10d rendezvous on the first node of
    the allocation (``MASTER_ADDR``, ``MASTER_PORT``, which the array
    script exports, and the job id). The tools get ``--launcher pytorch``,
    so a job runs the same way under slurm as under torchrun, on GPUs or
    (gloo) on CPUs.

    Args:
        gpus_per_run (int): GPUs (processes) per node.
        nnodes (int): Nodes per run. Defaults to 1.
        python (str, optional): The interpreter. Defaults to None
            (``sys.executable``).
        srun_args (Sequence[str]): Extra ``srun`` arguments.
            Defaults to ().
    """

    def __init__(self, gpus_per_run: int, nnodes: int = 1,
                 python: Optional[str] = None,
                 srun_args: Sequence[str] = ()) -> None:
        super().__init__(gpus_per_run, python)
        if nnodes < 1:
            raise ValueError(f'nnodes must be >= 1, got {nnodes}')
        self.nnodes = nnodes
        self.srun_args = list(srun_args)

    def rendezvous(self) -> List[str]:
        """One node: standalone; several: c10d on the allocation's first.

        The address, port and job id are read from the environment of the
        array task (written as ``$NAME`` where unset, for display).
        """
        if self.nnodes == 1:
            return super().rendezvous()

        def env(name: str) -> str:
            return os.environ.get(name, f'${name}')

        return [
            f'--nnodes={self.nnodes}', '--rdzv_backend=c10d',
            f"--rdzv_endpoint={env('MASTER_ADDR')}:{env('MASTER_PORT')}",
            f"--rdzv_id={env('SLURM_JOB_ID')}"
        ]

    def command(self, tool: str, args: Sequence[str]) -> List[str]:
        """See :meth:`StageLauncher.command`."""
        return [
            'srun', f'--nodes={self.nnodes}', f'--ntasks={self.nnodes}',
            '--ntasks-per-node=1', '--kill-on-bad-exit=1', *self.srun_args
        ] + super().command(tool, args)


def visible_gpus() -> List[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names.

    Returns:
        list[str]: The entries of ``CUDA_VISIBLE_DEVICES`` when set, else
        ``'0' .. str(n - 1)`` for the ``n`` CUDA devices (none without
        CUDA).
    """
    import torch
    if not torch.cuda.is_available():
        return []
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    if listed is not None:
        return [d.strip() for d in listed.split(',') if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def device_slots(gpus: Sequence[str], gpus_per_run: int,
                 jobs: int) -> List[Dict[str, str]]:
    """The environment of each of ``jobs`` runs trained side by side.

    Args:
        gpus (Sequence[str]): The GPUs to share (:func:`visible_gpus`);
            empty on a machine without CUDA, where every run gets
            ``gpus_per_run`` CPU processes and no GPU.
        gpus_per_run (int): GPUs of each run.
        jobs (int): Runs at a time.

    Returns:
        list[dict]: Per slot, ``CUDA_VISIBLE_DEVICES``: disjoint groups of
        ``gpus_per_run`` GPUs, or ``''`` on CPU.

    Raises:
        ValueError: ``jobs * gpus_per_run`` exceeds the GPUs.
    """
    if jobs < 1 or gpus_per_run < 1:
        raise ValueError(f'jobs and gpus_per_run must be >= 1, got {jobs} '
                         f'and {gpus_per_run}')
    if not gpus:
        return [dict(CUDA_VISIBLE_DEVICES='') for _ in range(jobs)]
    if jobs * gpus_per_run > len(gpus):
        raise ValueError(
            f'--jobs {jobs} x --gpus-per-run {gpus_per_run} needs '
            f'{jobs * gpus_per_run} GPUs, but {len(gpus)} are visible '
            f'({",".join(gpus)})')
    return [
        dict(CUDA_VISIBLE_DEVICES=','.join(
            gpus[i * gpus_per_run:(i + 1) * gpus_per_run]))
        for i in range(jobs)
    ]


def slurm_array_script(runs: Sequence[Tuple[str, int]],
                       chain_command: Sequence[str],
                       repo_root: str,
                       log_dir: str,
                       gpus_per_run: int,
                       nnodes: int = 1,
                       max_parallel: Optional[int] = None,
                       job_name: str = 'ehm-study',
                       partition: Optional[str] = None,
                       cpus_per_gpu: int = 5,
                       use_gpus: bool = True,
                       sbatch_args: Sequence[str] = (),
                       stage_commands: Sequence[str] = ()) -> str:
    """A slurm array job with one task per (arm, seed) run.

    Task ``i`` runs ``chain_command ARM SEED`` for the ``i``-th run: the
    study tool's run driver, which runs the run's pretraining and
    evaluation stages with ``srun`` (:class:`SlurmLauncher`), skipping the
    finished ones and resuming a killed pretraining from its checkpoint, so
    a requeued or resubmitted task continues where it stopped.

    Args:
        runs (Sequence[tuple]): ``(arm, seed)`` per task.
        chain_command (Sequence[str]): The driver's command without the
            arm and seed.
        repo_root (str): The checkout the tasks run from.
        log_dir (str): Folder of the tasks' logs.
        gpus_per_run (int): GPUs (processes) per node of each run.
        nnodes (int): Nodes per run. Defaults to 1.
        max_parallel (int, optional): Tasks at a time (``%N``).
            Defaults to None (slurm decides).
        job_name (str): Defaults to ``'ehm-study'``.
        partition (str, optional): Defaults to None (the cluster default).
        cpus_per_gpu (int): CPUs per process. Defaults to 5.
        use_gpus (bool): Ask for ``gpus_per_run`` GPUs a node (``--gres``);
            False runs the processes on CPUs (gloo) with no GPU visible.
            Defaults to True.
        sbatch_args (Sequence[str]): More ``#SBATCH`` options, e.g.
            ``['--time=48:00:00']``. Defaults to ().
        stage_commands (Sequence[str]): The jobs each task runs, shown as
            comments. Defaults to ().

    Returns:
        str: The script.
    """
    if not runs:
        raise ValueError('no runs for the array job')
    bad = [arm for arm, _ in runs if not _SAFE_NAME.fullmatch(arm)]
    if bad:
        raise ValueError(f'arm names {sorted(set(bad))} cannot be written '
                         'into a shell array; use letters, digits, _ . -')
    array = f'0-{len(runs) - 1}' + (f'%{max_parallel}' if max_parallel
                                    else '')
    options = [
        f'--job-name={job_name}', f'--array={array}', f'--nodes={nnodes}',
        '--ntasks-per-node=1',
        f'--cpus-per-task={gpus_per_run * cpus_per_gpu}'
    ] + ([f'--gres=gpu:{gpus_per_run}'] if use_gpus else []) + [
        f'--output={os.path.join(log_dir, "%A_%a.log")}',
        '--open-mode=append', '--requeue'
    ] + ([f'--partition={partition}'] if partition else []) + list(
        sbatch_args)
    lines = [
        '#!/usr/bin/env bash',
        '# Generated by tools/analysis/masking_study.py --launcher slurm.',
        f'# One array task per (arm, seed) run ({len(runs)} runs); each task',
        '# runs its pretraining, then its evaluation stages, each an srun',
        '# job (a torchrun per node); finished stages are skipped, a killed',
        '# pretraining resumes from its last checkpoint (--resume), so',
        '# resubmit this script (or let slurm requeue a task) after any',
        '# failure. Jobs of each task:',
    ] + [f'#   {c}' for c in stage_commands] + [
        f'#SBATCH {option}' for option in options
    ] + [
        'set -euo pipefail',
        'RUNS=(',
    ] + [f"  '{arm} {seed}'" for arm, seed in runs] + [
        ')',
        'read -r ARM SEED <<< "${RUNS[$SLURM_ARRAY_TASK_ID]}"',
        '# The rendezvous of a run on several nodes: its first node, one',
        '# port per job.',
        'export MASTER_ADDR="$(scontrol show hostnames '
        '"$SLURM_JOB_NODELIST" | head -n 1)"',
        'export MASTER_PORT=$((20000 + SLURM_JOB_ID % 40000))',
    ] + ([] if use_gpus else ['export CUDA_VISIBLE_DEVICES=']) + [
        f'cd {shlex.quote(repo_root)}',
        f'export PYTHONPATH={shlex.quote(repo_root)}:${{PYTHONPATH:-}}',
        ' '.join(shlex.quote(part) for part in chain_command) +
        ' "$ARM" "$SEED"',
    ]
    return '\n'.join(lines) + '\n'
