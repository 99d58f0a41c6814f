# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The evaluation chain of a study run: what each stage is and runs.

A study config run on a cluster lists, in ``study_evaluation``, the jobs
that judge each pretrained encoder, in order (the schema of
docs/en/cluster_study.md, "Study config schema")::

    study_evaluation = [
        dict(name='knn', tool='test', checkpoint='argument',
             config='configs/study/imagenet/eval/vit-small-p16_knn_in100.py',
             metric='knnbank/top1', report_as='in100_knn/top1'),
        dict(name='linear', tool='train',
             checkpoint='model.backbone.init_cfg.checkpoint',
             config='configs/study/imagenet/eval/vit-small-p16_linear_in100.py',
             metric='accuracy/top1', report_as='in100_linear/top1'),
    ]

Each stage is an OpenMMLab config run by ``tools/train.py`` (``tool='train'``:
a linear probe or fine-tuning, whose validation of the final weights gives
the figure) or ``tools/test.py`` (``tool='test'``: its test loop gives it).
The run's pretraining checkpoint reaches the stage by ``checkpoint``: a
dotted config key set to its path, or ``'argument'`` for the ``CHECKPOINT``
argument of ``tools/test.py``. ``metric`` is the key the stage's evaluator
reports, ``report_as`` its name in the run's ``result.json`` (a key of
``study_metrics``). A stage that ``requires`` a package this machine lacks is
not run; its figure is then absent (``study_missing_metrics``).
"""
import copy
import hashlib
import json
import math
import os.path as osp
import re
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

#: ``checkpoint`` that passes the checkpoint as ``tools/test.py``'s
#: ``CHECKPOINT`` argument.
CHECKPOINT_ARGUMENT = 'argument'
#: The tools a stage can run, by name.
STAGE_TOOLS = ('train', 'test')
#: The name of the pretraining stage (no evaluation stage may take it).
PRETRAIN = 'pretrain'
#: File the :class:`~ehm_mm.engine.hooks.StageMetricsHook` of a stage
#: writes in its work dir.
STAGE_METRICS_FILE = 'stage_metrics.json'

_SPEC_KEYS = {'name', 'config', 'tool', 'checkpoint', 'metric', 'report_as',
              'requires', 'cfg_options'}
_REQUIRED_KEYS = ('name', 'config', 'tool', 'checkpoint', 'metric',
                  'report_as')
_STAGE_NAME = re.compile(r'[a-z0-9_]+')


class StudyEvaluationError(ValueError):
    """A ``study_evaluation`` entry that cannot be run as written."""


@dataclass(frozen=True)
class EvaluationStage:
    """One job of a run's evaluation chain.

    Args:
        name (str): Stage name, also its folder ``eval/<name>`` in the
            run's folder.
        config (str): Absolute path of the stage's config.
        tool (str): ``'train'`` or ``'test'``.
        checkpoint (str): Dotted config key that receives the pretraining
            checkpoint, or :data:`CHECKPOINT_ARGUMENT`.
        metric (str): Key of the stage's reported metric.
        report_as (str): Name of the figure in the run's ``result.json``.
        requires (tuple[str]): Python packages the stage needs.
            Defaults to ().
        cfg_options (dict): Dotted overrides merged into the stage config
            (before the checkpoint key). Defaults to an empty dict.
    """

    name: str
    config: str
    tool: str
    checkpoint: str
    metric: str
    report_as: str
    requires: Tuple[str, ...] = ()
    cfg_options: Dict[str, Any] = field(default_factory=dict)

    @property
    def script(self) -> str:
        """The file name of the tool, in ``tools/``."""
        return f'{self.tool}.py'

    def missing_packages(self) -> List[str]:
        """The packages of ``requires`` that this Python cannot import."""
        return [p for p in self.requires if find_spec(p) is None]


def parse_evaluation_stages(specs: Sequence[dict],
                            root: str) -> List[EvaluationStage]:
    """Check ``study_evaluation`` and resolve its config paths.

    Args:
        specs (Sequence[dict]): The entries of ``study_evaluation``.
        root (str): The repository root; relative stage config paths are
            relative to it.

    Returns:
        list[EvaluationStage]: The stages, in order.

    Raises:
        StudyEvaluationError: Naming the entry and what is wrong: an
            unknown or missing field, a repeated or malformed name, an
            unknown tool, a config that does not exist, a checkpoint
            argument the tool cannot take, two stages reported as one.
    """
    if not specs:
        raise StudyEvaluationError('study_evaluation lists no stage')
    stages, names, reported = [], set(), set()
    for i, spec in enumerate(specs):
        spec = dict(spec)
        where = f"study_evaluation[{i}] ({spec.get('name', '?')})"
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            raise StudyEvaluationError(
                f'{where}: unknown fields {unknown}; a stage has '
                f'{sorted(_SPEC_KEYS)}')
        absent = [k for k in _REQUIRED_KEYS if not spec.get(k)]
        if absent:
            raise StudyEvaluationError(f'{where}: needs {absent}')
        name = str(spec['name'])
        if not _STAGE_NAME.fullmatch(name):
            raise StudyEvaluationError(
                f'{where}: the name must match [a-z0-9_]+ (it names the '
                "stage's folder)")
        if name in names:
            raise StudyEvaluationError(f'{where}: stage {name!r} repeats')
        tool = spec['tool']
        if tool not in STAGE_TOOLS:
            raise StudyEvaluationError(
                f'{where}: tool {tool!r} is not one of {STAGE_TOOLS}')
        if (spec['checkpoint'] == CHECKPOINT_ARGUMENT) != (tool == 'test'):
            raise StudyEvaluationError(
                f"{where}: a 'test' stage takes the checkpoint as the "
                f"CHECKPOINT argument of tools/test.py (checkpoint="
                f"'{CHECKPOINT_ARGUMENT}'), a 'train' stage by a config key "
                "such as 'model.backbone.init_cfg.checkpoint'; got tool="
                f"{tool!r}, checkpoint={spec['checkpoint']!r}")
        config = spec['config']
        if not osp.isabs(config):
            config = osp.normpath(osp.join(root, config))
        if not osp.isfile(config):
            raise StudyEvaluationError(f'{where}: config {config} not found')
        report_as = spec['report_as']
        if report_as in reported:
            raise StudyEvaluationError(
                f'{where}: report_as {report_as!r} is another stage\'s too; '
                'give each stage its own')
        requires = spec.get('requires') or []
        if isinstance(requires, str):
            raise StudyEvaluationError(
                f'{where}: requires must be a list of package names, got '
                f'{requires!r}')
        names.add(name)
        reported.add(report_as)
        stages.append(
            EvaluationStage(
                name=name, config=config, tool=tool,
                checkpoint=spec['checkpoint'], metric=spec['metric'],
                report_as=report_as, requires=tuple(requires),
                cfg_options=dict(spec.get('cfg_options') or {})))
    return stages


def load_stage_config(stage: EvaluationStage) -> Config:
    """The stage's config with its ``cfg_options``, nothing run-specific.

    Args:
        stage (EvaluationStage): The stage.

    Returns:
        Config: Read from ``stage.config``.
    """
    cfg = Config.fromfile(stage.config)
    if stage.cfg_options:
        cfg.merge_from_dict(copy.deepcopy(stage.cfg_options))
    return cfg


def seeded_stage_config(cfg: Config, seed: int) -> Config:
    """A copy of a stage config that runs with the run's seed.

    Args:
        cfg (Config): From :func:`load_stage_config`.
        seed (int): The run's seed.

    Returns:
        Config: The copy, ``randomness.seed = seed`` (the config's other
        ``randomness`` settings kept).
    """
    cfg = cfg.copy()
    randomness = dict(cfg.get('randomness') or {})
    randomness['seed'] = seed
    cfg.randomness = randomness
    return cfg


def stage_digest(stage: EvaluationStage, cfg: Optional[Config],
                 seed: int) -> str:
    """sha256 of what a stage computes, wherever the study folder lies.

    Args:
        stage (EvaluationStage): The stage.
        cfg (Config, optional): From :func:`seeded_stage_config`; None for
            a stage that ``requires`` packages, whose config may not load
            on the machine that checks the digest (a login node without
            mmseg): its config file's text stands for it.
        seed (int): The run's seed.

    Returns:
        str: Hex digest of the stage's fields (its config path left out),
        the seed and the JSON of its config (sorted keys, ``work_dir`` left
        out) or the sha256 of its config file with its ``cfg_options``.
    """
    if cfg is None:
        with open(stage.config, 'rb') as f:
            content = dict(file_sha256=hashlib.sha256(f.read()).hexdigest(),
                           cfg_options=stage.cfg_options)
    else:
        content = cfg.to_dict()
        content.pop('work_dir', None)
    fields = dict(name=stage.name, tool=stage.tool,
                  checkpoint=stage.checkpoint, metric=stage.metric,
                  report_as=stage.report_as, seed=seed)
    text = json.dumps(dict(stage=fields, config=content), sort_keys=True,
                      default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def chain_digest(pretrain_digest: str,
                 stage_digests: Sequence[str]) -> str:
    """sha256 of a whole run: its pretraining and each stage, in order.

    Args:
        pretrain_digest (str): The pretraining config's digest.
        stage_digests (Sequence[str]): :func:`stage_digest` of each stage.

    Returns:
        str: Hex digest; a run's ``result.json`` records it.
    """
    text = json.dumps(dict(pretrain=pretrain_digest,
                           stages=list(stage_digests)))
    return hashlib.sha256(text.encode()).hexdigest()


def set_dotted(cfg: Config, key: str, value: Any) -> None:
    """Set ``cfg.<key>`` for a dotted key, as ``--cfg-options`` does.

    Args:
        cfg (Config): The config, changed in place.
        key (str): E.g. ``'model.backbone.init_cfg.checkpoint'``.
        value: The value.

    Raises:
        StudyEvaluationError: A part of the key before the last is not a
            dict of the config (a typo would otherwise add a dead key).
    """
    parts = key.split('.')
    node = cfg
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if hasattr(node, 'get') else None
        if not hasattr(child, 'keys'):
            raise StudyEvaluationError(
                f"checkpoint {key!r}: {'.'.join(parts[:i + 1])} is not "
                'a dict of the stage config')
        node = child
    cfg.merge_from_dict({key: value})


def prepare_stage_config(stage: EvaluationStage, cfg: Config,
                         checkpoint: str, work_dir: str) -> Config:
    """The config a stage runs with: checkpoint, work dir, metrics hook.

    Args:
        stage (EvaluationStage): The stage.
        cfg (Config): From :func:`seeded_stage_config`; not changed.
        checkpoint (str): Path of the pretraining checkpoint.
        work_dir (str): The stage's folder.

    Returns:
        Config: A copy of ``cfg`` with the checkpoint at the stage's
        ``checkpoint`` key (unless it is the test tool's argument),
        ``work_dir`` set and a
        :class:`~ehm_mm.engine.hooks.StageMetricsHook` appended to
        ``custom_hooks``.
    """
    cfg = cfg.copy()
    if stage.checkpoint != CHECKPOINT_ARGUMENT:
        set_dotted(cfg, stage.checkpoint, checkpoint)
    cfg.work_dir = work_dir
    hooks = list(cfg.get('custom_hooks') or [])
    hooks.append(dict(type='StageMetricsHook', out_file=STAGE_METRICS_FILE))
    cfg.custom_hooks = hooks
    return cfg


def stage_metric(stage: EvaluationStage, metrics_file: str) -> dict:
    """Read a finished stage's figure from its metrics file.

    A ``'test'`` stage's figure is its test's; a ``'train'`` stage's is
    the validation of its final weights (the last record, which must be
    ``final``).

    Args:
        stage (EvaluationStage): The stage.
        metrics_file (str): The :data:`STAGE_METRICS_FILE` it wrote.

    Returns:
        dict: ``value`` (finite float), ``metrics`` (all the record's
        numbers), ``iter`` and ``epoch`` of the record.

    Raises:
        StudyEvaluationError: The file is absent or unreadable, holds no
            record of the right kind, the last validation is not of the
            final weights, or the metric is missing or not finite.
    """
    try:
        with open(metrics_file) as f:
            records = json.load(f)['records']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StudyEvaluationError(
            f'stage {stage.name}: no readable {metrics_file} '
            f'({type(e).__name__}: {e}); did its tool run its '
            f"{'test' if stage.tool == 'test' else 'validation'} loop?"
        ) from e
    mode = 'test' if stage.tool == 'test' else 'val'
    records = [r for r in records if r.get('mode') == mode]
    if not records:
        raise StudyEvaluationError(
            f'stage {stage.name}: {metrics_file} has no {mode} record (a '
            "'train' stage needs a val loop: val_dataloader, val_cfg and "
            'val_evaluator)')
    record = records[-1]
    if not record.get('final'):
        raise StudyEvaluationError(
            f"stage {stage.name}: its last validation is at iteration "
            f"{record.get('iter')}, not of the final weights")
    value = record['metrics'].get(stage.metric)
    if value is None:
        raise StudyEvaluationError(
            f'stage {stage.name}: metric {stage.metric!r} not reported; '
            f"it reported {sorted(record['metrics'])}")
    if not math.isfinite(value):
        raise StudyEvaluationError(
            f'stage {stage.name}: metric {stage.metric!r} is {value}, not '
            'finite')
    return dict(value=float(value), metrics=record['metrics'],
                iter=record.get('iter'), epoch=record.get('epoch'))

