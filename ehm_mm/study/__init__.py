# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Running a masking study on a cluster (``tools/analysis/masking_study.py``
with ``--launcher torchrun`` or ``slurm``).

Each (arm, seed) run is a chain of distributed jobs, pretraining then the
evaluation stages of ``study_evaluation`` (:mod:`.evaluation_stages`),
started by torchrun or srun (:mod:`.launchers`) and resumable job by job
(:mod:`.run_chain`).
"""
from .cluster_study import ClusterStudy
from .evaluation_stages import (
    CHECKPOINT_ARGUMENT,
    EvaluationStage,
    StudyEvaluationError,
    chain_digest,
    load_stage_config,
    parse_evaluation_stages,
    prepare_stage_config,
    stage_digest,
    stage_metric,
)
from .launchers import (
    SlurmLauncher,
    StageLauncher,
    TorchrunLauncher,
    device_slots,
    slurm_array_script,
    visible_gpus,
)
from .run_chain import (
    RunChain,
    StageFailedError,
    StageMarkerError,
    read_marker,
    run_chain,
)

__all__ = [
    'CHECKPOINT_ARGUMENT', 'ClusterStudy', 'EvaluationStage', 'RunChain',
    'SlurmLauncher', 'StageFailedError', 'StageLauncher', 'StageMarkerError',
    'StudyEvaluationError', 'TorchrunLauncher', 'chain_digest',
    'device_slots', 'load_stage_config', 'parse_evaluation_stages',
    'prepare_stage_config', 'read_marker', 'run_chain', 'slurm_array_script',
    'stage_digest', 'stage_metric', 'visible_gpus'
]
