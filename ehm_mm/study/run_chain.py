# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""One study run as a chain of jobs: pretraining, then each evaluation.

:func:`run_chain` runs one (arm, seed) of a study whose config lists
``study_evaluation`` (:mod:`ehm_mm.study.evaluation_stages`): it pretrains
with ``tools/train.py``, then runs every evaluation stage with the
pretraining checkpoint passed in, each as a distributed job of the given
:class:`~ehm_mm.study.launchers.StageLauncher`, and assembles the run's
``result.json`` from the stages' figures, in the form the study report
reads.

The pretraining works in the run's folder (as a local run does, so its
``last_checkpoint`` is ``<run>/last_checkpoint``), each stage in
``<run>/eval/<name>/``; every job leaves a completion marker
(``stage_done.json``) in its folder recording the arm, the seed, the config
digest and, for an evaluation, its finite figure. A job with a valid
marker is never redone; a pretraining without one resumes from its last
checkpoint (``tools/train.py --resume``, as does a ``'train'`` stage), a
``'test'`` stage reruns. A folder whose
job was started for another config, or a marker of another run, stops the
chain with a :class:`StageMarkerError` naming it.
"""
import json
import math
import os
import os.path as osp
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from mmengine.config import Config

from ehm_mm.utils.atomic_io import atomic_write_text

from .evaluation_stages import (
    PRETRAIN,
    STAGE_METRICS_FILE,
    EvaluationStage,
    chain_digest,
    load_stage_config,
    prepare_stage_config,
    seeded_stage_config,
    stage_digest,
    stage_metric,
)
from .launchers import StageLauncher

#: Folder of the evaluation stages' work dirs in a run's folder.
EVAL_FOLDER = 'eval'
#: Completion marker of a job, in its folder.
MARKER_FILE = 'stage_done.json'
#: What a job was started with, written before it runs.
STARTED_FILE = 'stage_started.json'
#: The config a job runs with, in its folder.
CONFIG_FILE = 'config.py'
#: The output of a job's processes, appended to at every try.
LOG_FILE = 'stage.log'
#: The run's result, in the form ``masking_study.py``'s report reads.
RESULT_FILE = 'result.json'


class StageMarkerError(ValueError):
    """A job folder or marker that does not belong to the run."""


class StageFailedError(RuntimeError):
    """A job of the chain exited with an error."""


@dataclass
class RunChain:
    """What one (arm, seed) run of a cluster study runs.

    Args:
        arm (str): Arm name.
        seed (int): Seed.
        folder (str): The run's folder (absolute).
        pretrain_cfg (Config): The pretraining config (arm, seed and
            options merged; ``work_dir`` is set here).
        pretrain_digest (str): Its digest, wherever the folder lies.
        stages (list[EvaluationStage]): The evaluation stages, in order.
        stage_cfgs (list[Config | None]): Their configs with the run's
            seed (:func:`~ehm_mm.study.evaluation_stages.seeded_stage_config`);
            None for a stage that ``requires`` packages: read when it runs.
        tools_dir (str): The folder of ``train.py`` and ``test.py``.
    """

    arm: str
    seed: int
    folder: str
    pretrain_cfg: Config
    pretrain_digest: str
    stages: List[EvaluationStage]
    stage_cfgs: List[Optional[Config]]
    tools_dir: str

    def stage_digest(self, index: int) -> str:
        """The digest of stage ``index`` of this run (its pretraining's in)."""
        return chain_digest(
            self.pretrain_digest,
            [stage_digest(self.stages[index], self.stage_cfgs[index],
                          self.seed)])

    @property
    def digest(self) -> str:
        """The digest the run's ``result.json`` records."""
        return chain_digest(self.pretrain_digest, [
            stage_digest(stage, cfg, self.seed)
            for stage, cfg in zip(self.stages, self.stage_cfgs)
        ])

    def job_folder(self, name: str) -> str:
        """The folder of job ``name``: the run's folder for the pretraining
        (its work dir, as a local run's), ``eval/<name>`` for a stage."""
        if name == PRETRAIN:
            return self.folder
        return osp.join(self.folder, EVAL_FOLDER, name)


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StageMarkerError(
            f'{path}: unreadable ({type(e).__name__}: {e}); delete it to '
            'rerun the job') from e
    if not isinstance(content, dict):
        raise StageMarkerError(f'{path}: holds a {type(content).__name__}, '
                               'not a record')
    return content


def _check_owner(path: str, record: dict, chain: RunChain, name: str,
                 digest: str) -> None:
    for field, expected in (('arm', chain.arm), ('seed', chain.seed),
                            ('stage', name)):
        if record.get(field) != expected:
            raise StageMarkerError(
                f'{path}: records {field} {record.get(field)!r}, but lies '
                f'in the folder of {field} {expected!r} (copied or moved?)')
    if record.get('config_digest') != digest:
        raise StageMarkerError(
            f"{path}: written for config digest "
            f"{str(record.get('config_digest'))[:12]}..., this study's "
            f'{name} of {chain.arm} seed {chain.seed} has {digest[:12]}... '
            '(the config, the arm, --cfg-options or the stage changed); '
            f'delete {osp.dirname(path)} to rerun the job with this config')


def read_marker(chain: RunChain, name: str,
                digest: str) -> Optional[dict]:
    """The valid completion marker of job ``name``, or None if it has none.

    Args:
        chain (RunChain): The run.
        name (str): ``'pretrain'`` or a stage name.
        digest (str): The job's config digest.

    Returns:
        dict or None: The marker.

    Raises:
        StageMarkerError: The marker is unreadable, of another arm, seed,
            job or config, names a missing checkpoint or holds a figure
            that is not a finite number.
    """
    path = osp.join(chain.job_folder(name), MARKER_FILE)
    if not osp.exists(path):
        return None
    record = _read_json(path)
    _check_owner(path, record, chain, name, digest)
    if name == PRETRAIN:
        checkpoint = osp.join(chain.folder, str(record.get('checkpoint')))
        if not osp.isfile(checkpoint):
            raise StageMarkerError(
                f'{path}: its checkpoint {checkpoint} is missing; delete '
                f'{osp.dirname(path)} to pretrain again')
    else:
        value = record.get('value')
        if isinstance(value, bool) or not isinstance(
                value, (int, float)) or not math.isfinite(value):
            raise StageMarkerError(
                f'{path}: its figure is {value!r}, not a finite number')
    return record


def claim_folder(chain: RunChain, name: str, digest: str) -> str:
    """Make job ``name``'s folder, refusing one started for another config.

    Args:
        chain (RunChain): The run.
        name (str): ``'pretrain'`` or a stage name.
        digest (str): The job's config digest.

    Returns:
        str: The folder.

    Raises:
        StageMarkerError: The folder's job was started with another config
            (its checkpoints must not be resumed by this one).
    """
    folder = chain.job_folder(name)
    path = osp.join(folder, STARTED_FILE)
    if osp.exists(path):
        _check_owner(path, _read_json(path), chain, name, digest)
    else:
        os.makedirs(folder, exist_ok=True)
        atomic_write_text(
            json.dumps(dict(arm=chain.arm, seed=chain.seed, stage=name,
                            config_digest=digest)), path)
    return folder


def run_job(command: List[str], folder: str, cwd: str,
            env: Optional[Dict[str, str]] = None) -> float:
    """Run one job, its output appended to ``folder/stage.log``.

    Args:
        command (list[str]): From the launcher.
        folder (str): The job's folder.
        cwd (str): Working directory (the repository root).
        env (dict, optional): Environment. Defaults to None (inherited).

    Returns:
        float: Seconds it took.

    Raises:
        StageFailedError: It exited with an error; names the log.
    """
    log_path = osp.join(folder, LOG_FILE)
    start = time.time()
    with open(log_path, 'a') as log:
        log.write(f'\n$ {" ".join(command)}\n')
        log.flush()
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT,
                               cwd=cwd, env=env)
    if code:
        raise StageFailedError(f'{" ".join(command[:8])} ... exited {code}; '
                               f'see {log_path}')
    return time.time() - start


def _write_marker(chain: RunChain, name: str, record: dict) -> dict:
    record = dict(arm=chain.arm, seed=chain.seed, stage=name, **record)
    atomic_write_text(json.dumps(record, indent=1),
                      osp.join(chain.job_folder(name), MARKER_FILE))
    return record


def pretrain_job_args(config: str, folder: str) -> List[str]:
    """``tools/train.py``'s arguments for a run's pretraining.

    Args:
        config (str): The dumped pretraining config.
        folder (str): The run's folder, its work dir.

    Returns:
        list[str]: ``CONFIG --work-dir FOLDER --resume`` (the latest
        checkpoint in the folder is resumed; none: a fresh start).
    """
    return [config, '--work-dir', folder, '--resume']


def stage_job_args(stage: EvaluationStage, config: str, checkpoint: str,
                   folder: str) -> List[str]:
    """The tool's arguments for an evaluation stage.

    Args:
        stage (EvaluationStage): The stage.
        config (str): The dumped stage config.
        checkpoint (str): The pretraining checkpoint.
        folder (str): The stage's folder, its work dir.

    Returns:
        list[str]: ``tools/test.py``: ``CONFIG CHECKPOINT --work-dir
        FOLDER``; ``tools/train.py``: ``CONFIG --work-dir FOLDER
        --resume`` (a killed stage continues from its checkpoint).
    """
    if stage.tool == 'test':
        return [config, checkpoint, '--work-dir', folder]
    return [config, '--work-dir', folder, '--resume']


def run_pretraining(chain: RunChain, launcher: StageLauncher,
                    env: Optional[Dict[str, str]] = None,
                    log: Callable[[str], None] = print) -> dict:
    """Pretrain (or resume, or skip) and return the pretraining's marker.

    Args:
        chain (RunChain): The run.
        launcher (StageLauncher): How jobs start.
        env (dict, optional): The jobs' environment. Defaults to None.
        log (Callable): Progress messages. Defaults to ``print``.

    Returns:
        dict: The marker: ``checkpoint`` (relative to the run folder),
        ``wall_s``, ``config_digest``.
    """
    marker = read_marker(chain, PRETRAIN, chain.pretrain_digest)
    if marker is not None:
        log(f'[study] {chain.arm} seed {chain.seed}: pretraining done')
        return marker
    folder = claim_folder(chain, PRETRAIN, chain.pretrain_digest)
    cfg = chain.pretrain_cfg.copy()
    cfg.work_dir = folder
    config = osp.join(folder, CONFIG_FILE)
    cfg.dump(config)
    log(f'[study] {chain.arm} seed {chain.seed}: pretraining (resumes from '
        'its last checkpoint if a try was killed)')
    wall = run_job(
        launcher.command(
            osp.join(chain.tools_dir, 'train.py'),
            pretrain_job_args(config, folder)), folder,
        osp.dirname(chain.tools_dir), env)
    pointer = osp.join(folder, 'last_checkpoint')
    try:
        with open(pointer) as f:
            checkpoint = f.read().strip()
    except OSError as e:
        raise StageFailedError(
            f'pretraining of {chain.arm} seed {chain.seed} ended without '
            f'{pointer} (no checkpoint saved?)') from e
    if not osp.isabs(checkpoint):
        checkpoint = osp.join(folder, checkpoint)
    if not osp.isfile(checkpoint):
        raise StageFailedError(f'{pointer} names {checkpoint}, which does '
                               'not exist')
    check_final_checkpoint(chain.pretrain_cfg, checkpoint)
    return _write_marker(
        chain, PRETRAIN,
        dict(config_digest=chain.pretrain_digest,
             checkpoint=osp.relpath(checkpoint, chain.folder), wall_s=wall))


def check_final_checkpoint(cfg: Config, checkpoint: str) -> None:
    """Refuse a checkpoint of an unfinished pretraining.

    Judged by mmengine's file names: ``epoch_<n>.pth`` must have
    ``n == train_cfg.max_epochs`` and ``iter_<n>.pth`` of an
    iteration-based loop ``n == train_cfg.max_iters`` (an epoch-based
    loop that saves by iteration names no epoch and is not judged).

    Args:
        cfg (Config): The pretraining config.
        checkpoint (str): The last checkpoint.

    Raises:
        StageFailedError: The checkpoint is of an earlier epoch or
            iteration.
    """
    match = re.fullmatch(r'(epoch|iter)_(\d+)\.pth', osp.basename(checkpoint))
    if match is None:
        return
    unit, number = match.group(1), int(match.group(2))
    last = cfg.train_cfg.get(f'max_{unit}s')
    if last is not None and number != int(last):
        raise StageFailedError(
            f'the pretraining ended at {osp.basename(checkpoint)}, not at '
            f'max_{unit}s = {last}; no stage starts from an unfinished '
            'pretraining')


def run_stage(chain: RunChain, index: int, checkpoint: str,
              launcher: StageLauncher,
              env: Optional[Dict[str, str]] = None,
              log: Callable[[str], None] = print) -> dict:
    """Run (or skip) evaluation stage ``index`` of the chain.

    Args:
        chain (RunChain): The run.
        index (int): Position of the stage in ``chain.stages``.
        checkpoint (str): The pretraining checkpoint (absolute).
        launcher (StageLauncher): How jobs start.
        env (dict, optional): The jobs' environment. Defaults to None.
        log (Callable): Progress messages. Defaults to ``print``.

    Returns:
        dict: The stage's marker: ``value`` (its figure), ``key``,
        ``metrics`` (all it reported), ``wall_s``.
    """
    stage, digest = chain.stages[index], chain.stage_digest(index)
    marker = read_marker(chain, stage.name, digest)
    if marker is not None:
        log(f'[study] {chain.arm} seed {chain.seed}: {stage.name} done')
        return marker
    folder = claim_folder(chain, stage.name, digest)
    metrics_file = osp.join(folder, STAGE_METRICS_FILE)
    if osp.exists(metrics_file):  # of a killed try: not this try's figures
        os.remove(metrics_file)
    config = osp.join(folder, CONFIG_FILE)
    cfg = chain.stage_cfgs[index] or seeded_stage_config(
        load_stage_config(stage), chain.seed)
    prepare_stage_config(stage, cfg, checkpoint, folder).dump(config)
    args = stage_job_args(stage, config, checkpoint, folder)
    log(f'[study] {chain.arm} seed {chain.seed}: {stage.name} '
        f'(tools/{stage.script})')
    wall = run_job(
        launcher.command(osp.join(chain.tools_dir, stage.script), args),
        folder, osp.dirname(chain.tools_dir), env)
    figure = stage_metric(stage, metrics_file)
    return _write_marker(
        chain, stage.name,
        dict(config_digest=digest, report_as=stage.report_as,
             metric=stage.metric,
             value=figure['value'], metrics=figure['metrics'],
             iter=figure['iter'], epoch=figure['epoch'], wall_s=wall))


def run_chain(chain: RunChain, launcher: StageLauncher,
              env: Optional[Dict[str, str]] = None,
              log: Callable[[str], None] = print) -> dict:
    """Run a whole (arm, seed) run and write its ``result.json``.

    Args:
        chain (RunChain): The run.
        launcher (StageLauncher): How jobs start.
        env (dict, optional): The jobs' environment. Defaults to None
            (this process's).
        log (Callable): Progress messages. Defaults to ``print``.

    Returns:
        dict: The result written: ``arm``, ``seed``, ``config_digest``
        (:attr:`RunChain.digest`), ``final`` (each stage's ``report_as``
        and figure), ``history`` (the final figures at the pretraining's last
        epoch; empty for an iteration-based pretraining),
        ``attention_distance`` (empty: not measured by the chain),
        ``wall_s`` (the try that completed each job), ``stages`` and
        ``skipped_stages`` (name -> why: a package of ``requires`` is
        missing; their figures are absent).
    """
    os.makedirs(chain.folder, exist_ok=True)
    pretrain = run_pretraining(chain, launcher, env, log)
    checkpoint = osp.join(chain.folder, pretrain['checkpoint'])
    stages, skipped = {}, {}
    for i, stage in enumerate(chain.stages):
        missing = stage.missing_packages()
        if missing:
            skipped[stage.name] = (f'needs {missing}, which this Python '
                                   'cannot import')
            log(f'[study] {chain.arm} seed {chain.seed}: {stage.name} not '
                f'run: {skipped[stage.name]}')
            continue
        stages[stage.name] = run_stage(chain, i, checkpoint, launcher, env,
                                       log)
    final = {m['report_as']: m['value'] for m in stages.values()}
    epochs = chain.pretrain_cfg.train_cfg.get('max_epochs')
    result = dict(
        arm=chain.arm,
        seed=chain.seed,
        config_digest=chain.digest,
        final=final,
        history=[dict(epoch=epochs, metrics=final)] if epochs else [],
        attention_distance=[],
        wall_s=pretrain['wall_s'] + sum(m['wall_s'] for m in stages.values()),
        pretrain=dict(checkpoint=pretrain['checkpoint'],
                      wall_s=pretrain['wall_s']),
        stages={
            name: {k: m[k] for k in ('report_as', 'metric', 'value',
                                     'metrics', 'wall_s')}
            for name, m in stages.items()
        },
        skipped_stages=skipped,
        launcher=type(launcher).__name__,
        gpus_per_run=launcher.gpus_per_run)
    atomic_write_text(json.dumps(result, indent=1),
                      osp.join(chain.folder, RESULT_FILE))
    log(f'[study] {chain.arm} seed {chain.seed}: result written')
    return result

