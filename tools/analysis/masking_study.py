# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""A controlled masking study: arms x paired seeds from one base config.

Each arm is a set of config overrides (``study_arms`` in the config); each
seed is a training run with ``randomness.seed = seed``, so for one seed all
arms start from the same initialisation and see the same data order and
augmentations (the masks draw from their own generator). Every run trains
in its own process, validates at the config's ``val_interval`` (the metrics
of the config's ``val_evaluator``: k-NN, linear probe, patch segmentation
probe, hierarchy IoU of the tree that made the masks and, where the
config asks, of the image's own teacher tree), then measures the mean
attention distance per layer of the final encoder on the validation images
and the mask-object alignment of the masks the trained arm draws
(:func:`mask_alignment_log`), and writes
``runs/<arm>/seed<k>/result.json``. Finished runs are never redone; an
unfinished run resumes from its last checkpoint.

When all runs are done (or with ``--report-only``) the tool writes
``results.json`` (everything), ``results.csv`` (one row per run),
``results.md`` (mean, sd and the paired difference to the baseline arm with
a 95% t interval, the epoch each arm first reaches the baseline's final
value, attention distances, masked node sizes, mask-object alignment) and PNG
plots into ``--out``.

A study config with ``study_evaluation`` (the ImageNet study) runs with
``--launcher torchrun`` or ``slurm`` instead: every run is a chain of
distributed jobs, its pretraining then its evaluation stages, each resumable
on its own (``ehm_mm/study``); its ``result.json`` feeds the same report.

Examples:
    python tools/analysis/masking_study.py \\
        configs/study/masking_study_scenes.py --out work_dirs/study \\
        --seeds 0 1 2 3 --jobs 2
    python tools/analysis/masking_study.py \\
        configs/study/masking_study_scenes.py --out /tmp/q --quick
    python tools/analysis/masking_study.py CLUSTER_STUDY_CONFIG \\
        --out work_dirs/in100 --launcher torchrun --gpus-per-run 8
    python tools/analysis/masking_study.py CLUSTER_STUDY_CONFIG \\
        --out work_dirs/in100 --launcher slurm --gpus-per-run 8 --submit
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import os.path as osp
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

from mmengine.hooks import Hook

from ehm_mm.evaluation.study_statistics import (
    holm,
    mean_sd,
    paired_t_test,
    tost,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ehm_mm.study import ClusterStudy, StageLauncher

#: Metrics reported (validation keys) and their short names in the tables.
METRICS = (('knn/top1', 'k-NN top-1'), ('linear/top1', 'linear top-1'),
           ('segprobe/mIoU', 'seg-probe mIoU'),
           ('hierarchy/best_iou', 'hierarchy best-IoU'))
#: Two-sided 95% Student t quantiles, df = 1 .. 30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262,
         2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101,
         2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052,
         2.048, 2.045, 2.042)
RESULT_FILE = 'result.json'
RUNNING_FILE = 'running.pid'


def is_running(folder: str) -> bool:
    """Whether a live process is training the run in ``folder``."""
    try:
        with open(osp.join(folder, RUNNING_FILE)) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Run and report a controlled masking study')
    parser.add_argument('config', help='study config (with study_arms)')
    parser.add_argument('--out', required=True, help='study output folder')
    parser.add_argument(
        '--arms', nargs='+', help='arms to run (default: all in the config)')
    parser.add_argument(
        '--seeds', nargs='+', type=int, default=None,
        help='seeds (paired across arms); default 0 1 2 3 (0 with --quick)')
    parser.add_argument(
        '--jobs', type=int, default=None,
        help='runs in parallel (default 1; slurm: array tasks at a time, '
        'default no limit)')
    parser.add_argument(
        '--threads', type=int, default=1,
        help='torch threads per run (default 1)')
    parser.add_argument(
        '--device', choices=['cpu', 'cuda'], default=None,
        help='device of the runs (default: CUDA when available, else CPU; '
        'slurm: cpu asks for no GPU)')
    parser.add_argument(
        '--quick', action='store_true',
        help='smoke test: the config\'s study_quick arms and overrides, '
        'seed 0 unless --seeds is given')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
        help='config overrides applied to every run after the arm\'s '
        '(mmengine syntax, e.g. train_dataloader.dataset.data_root=/data)')
    parser.add_argument(
        '--priority-arms', nargs='+', default=[],
        help='run these arms (all seeds) before the others')
    parser.add_argument(
        '--baselines', action='store_true',
        help='also measure the baselines (untrained encoder per seed, raw '
        'pixels, colour alone, metric floors) into baselines.json')
    parser.add_argument(
        '--report-only', action='store_true',
        help='write the report from the finished runs, train nothing')
    parser.add_argument(
        '--launcher', choices=['local', 'torchrun', 'slurm'],
        default='local',
        help='local: each run trains and validates in one process on this '
        'machine (default). torchrun / slurm: each run is a chain of '
        'distributed jobs, pretraining then the study_evaluation stages of '
        'the config (torchrun on this machine, --jobs runs at a time; slurm: '
        'an array job, one task per run)')
    parser.add_argument(
        '--gpus-per-run', type=int, default=1,
        help='torchrun / slurm: GPUs (processes) of each job per node; '
        'without CUDA, CPU processes (gloo). Default 1')
    parser.add_argument(
        '--nnodes', type=int, default=1,
        help='slurm: nodes of each run (default 1)')
    parser.add_argument(
        '--submit', action='store_true',
        help='slurm: submit the array script with sbatch (default: write it '
        'and print the command)')
    parser.add_argument(
        '--cpus-per-gpu', type=int, default=5,
        help='slurm: CPUs per process of a job (default 5)')
    parser.add_argument(
        '--partition', help='slurm: the partition (default: the cluster\'s)')
    parser.add_argument(
        '--sbatch-args', nargs='+', default=[], metavar='OPTION',
        help='slurm: more #SBATCH options, e.g. --sbatch-args=--time=48:00:00')
    parser.add_argument(
        '--run-one', nargs=3, metavar=('ARM', 'SEED', 'WORK_DIR'),
        help=argparse.SUPPRESS)
    parser.add_argument(
        '--run-chain', nargs=2, metavar=('ARM', 'SEED'),
        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- the runs
def load_study(config: str, quick: bool):
    """Load the config and its arms.

    Args:
        config (str): Path of the study config.
        quick (bool): Apply ``study_quick``.

    Returns:
        tuple: ``(cfg, arms, baseline, quick_arms, contrasts)``; ``arms``
        maps names to override dicts.
    """
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    arms = cfg.get('study_arms')
    if not arms:
        raise ValueError(f'{config} defines no study_arms')
    arms = {name: dict(value) for name, value in arms.items()}
    baseline = cfg.get('study_baseline', next(iter(arms)))
    if baseline not in arms:
        raise ValueError(f'study_baseline {baseline!r} is not an arm; arms: '
                         f'{list(arms)}')
    contrasts = [dict(c) for c in cfg.get('study_contrasts', [])]
    for spec in contrasts:
        if not {'name', 'arms', 'reference'} <= set(spec):
            raise ValueError('each of study_contrasts needs name, arms and '
                             f'reference, got {spec}')
        unknown = [
            a for a in list(spec['arms']) + list(spec['reference'])
            if a not in arms
        ]
        if unknown:
            raise ValueError(f"study_contrasts {spec['name']!r}: unknown "
                             f'arms {unknown}')
    quick_arms = None
    if quick:
        spec = cfg.get('study_quick')
        if not spec:
            raise ValueError(f'--quick needs study_quick in {config}')
        quick_arms = list(spec.get('arms', list(arms)[:2]))
    return cfg, arms, baseline, quick_arms, contrasts


def parse_cfg_options(options: Sequence[str]) -> dict:
    """Parse ``KEY=VALUE`` strings as mmengine's ``--cfg-options`` does.

    Args:
        options (Sequence[str]): The strings.

    Returns:
        dict: Dotted keys to values.
    """
    from mmengine.config import DictAction
    if not options:
        return {}
    parser = argparse.ArgumentParser()
    parser.add_argument('--options', nargs='+', action=DictAction)
    return parser.parse_args(['--options', *options]).options


def build_run_config(config: str,
                     arm: str,
                     seed: int,
                     work_dir: str,
                     quick: bool,
                     cfg_options: Sequence[str] = (),
                     amp_fallback: bool = True):
    """The config of one run: base + arm (+ quick) + options + seed.

    Args:
        config (str): Path of the study config.
        arm (str): Arm name.
        seed (int): Seed.
        work_dir (str): The run's work dir.
        quick (bool): Apply ``study_quick.overrides``.
        cfg_options (Sequence[str]): ``KEY=VALUE`` overrides applied last.
            Defaults to ().
        amp_fallback (bool): Replace AMP by fp32 when this machine has no
            accelerator. False for a config that another machine trains
            (``tools/train.py`` falls back there). Defaults to True.

    Returns:
        Config: Ready for ``build_runner``.
    """
    from ehm_mm.utils.launch import fall_back_from_amp
    cfg, arms, _, _, _ = load_study(config, quick)
    if arm not in arms:
        raise ValueError(f'unknown arm {arm!r}; arms: {list(arms)}')
    cfg.merge_from_dict(arms[arm])
    if quick:
        cfg.merge_from_dict(dict(cfg.study_quick.get('overrides', {})))
    cfg.merge_from_dict(parse_cfg_options(cfg_options))
    for key in [k for k in cfg.keys() if k.startswith('study_')]:
        cfg.pop(key)
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=seed, diff_rank_seed=True, deterministic=False)
    cfg.resume = True  # continue an interrupted run; fresh when none
    cfg.load_from = None
    cfg.launcher = 'none'
    if amp_fallback:
        fall_back_from_amp(cfg)
    return cfg


def config_digest(cfg) -> str:
    """sha256 of a run's config, its work dir left out.

    Args:
        cfg (Config): From :func:`build_run_config`.

    Returns:
        str: Hex digest of the JSON of the config (sorted keys), so a study
        folder can move without invalidating its results.
    """
    content = cfg.to_dict()
    content.pop('work_dir', None)
    text = json.dumps(content, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def run_digest(config: str, arm: str, seed: int, quick: bool,
               cfg_options: Sequence[str] = ()) -> str:
    """The :func:`config_digest` of run ``(arm, seed)`` of a study.

    Args:
        config (str): Path of the study config.
        arm (str): Arm name.
        seed (int): Seed.
        quick (bool): ``--quick``.
        cfg_options (Sequence[str]): ``--cfg-options``. Defaults to ().

    Returns:
        str: The digest a valid ``result.json`` of that run records.
    """
    return config_digest(
        build_run_config(config, arm, seed, '', quick, cfg_options))


def expected_validation_epochs(cfg) -> List[int]:
    """The epochs at which an epoch-based run of ``cfg`` validates.

    As mmengine's ``EpochBasedTrainLoop``: every ``val_interval`` epochs
    from ``val_begin`` on, and the last epoch.

    Args:
        cfg (Config): A run config with ``train_cfg.max_epochs``.

    Returns:
        list[int]: Sorted epochs.
    """
    train_cfg = cfg.train_cfg
    max_epochs = int(train_cfg['max_epochs'])
    interval = int(train_cfg.get('val_interval', 1))
    begin = int(train_cfg.get('val_begin', 1))
    return [
        e for e in range(1, max_epochs + 1)
        if e >= begin and (e % interval == 0 or e == max_epochs)
    ]


class RevalidateSkippedHook(Hook):
    """Validate, at the start of a resumed run, an epoch a kill skipped.

    mmengine saves the epoch's checkpoint (``after_train_epoch``) before it
    validates, so a run killed between the two resumes past that epoch and
    never validates it. Registered after ``EvaluationSummaryHook`` (which
    loads the history of the run in ``before_train``), this hook validates
    the resumed epoch when it is a validation epoch that the history lacks.
    The resumed weights are exactly that epoch's, so the figures are the
    ones the killed run would have written.

    Args:
        summary_file (str): The summary hook's file in the work dir.
            Defaults to ``'evaluation_summary.json'``.
    """

    priority = 'LOWEST'

    def __init__(self, summary_file: str = 'evaluation_summary.json') -> None:
        self.summary_file = summary_file
        self.revalidated: Optional[int] = None

    def before_train(self, runner) -> None:
        """Validate the resumed epoch if its validation is missing.

        Args:
            runner (Runner): The runner, after ``load_or_resume``.
        """
        if runner.iter == 0 or runner.val_loop is None:
            return
        if runner.epoch not in expected_validation_epochs(runner.cfg):
            return
        path = osp.join(runner.work_dir, self.summary_file)
        history = []
        if osp.exists(path):
            with open(path) as f:
                history = json.load(f).get('history', [])
        if any(entry['iter'] == runner.iter for entry in history):
            return
        print(f'[study] epoch {runner.epoch} was not validated before the '
              'run stopped; validating it now', flush=True)
        runner.val_loop.run()
        self.revalidated = runner.epoch


def node_size_log(runner, iters_per_epoch: int) -> Optional[dict]:
    """The logged ``mask_node_size`` of a run: mean overall and per epoch.

    Args:
        runner (Runner): The trained runner.
        iters_per_epoch (int): Iterations per epoch.

    Returns:
        dict or None: ``mean`` and ``per_epoch`` (list of means); None when
        the model logged no node size.
    """
    buffer = runner.message_hub.log_scalars.get('train/mask_node_size')
    if buffer is None:
        return None
    values = [float(v) for v in buffer.data[0]]
    if not values:
        return None
    per_epoch = [
        sum(chunk) / len(chunk) for chunk in (
            values[i:i + iters_per_epoch]
            for i in range(0, len(values), iters_per_epoch))
    ]
    return dict(mean=sum(values) / len(values), per_epoch=per_epoch,
                num_logged=len(values))


def _val_batches(runner, device) -> List[tuple]:
    """The validation batches, normalised by the model's preprocessor.

    Returns:
        list[tuple]: ``(inputs [B, C, H, W] on device, data_samples)`` per
        batch of the validation dataloader.
    """
    batches = []
    for data in runner.val_dataloader:
        data = runner.model.data_preprocessor(data, False)
        batches.append((data['inputs'].to(device), data['data_samples']))
    return batches


#: Keys of :func:`~ehm_mm.evaluation.mask_alignment.mask_object_alignment`,
#: with their names in the report.
ALIGNMENT = (('node_in_object', 'masked nodes inside one object'),
             ('node_in_background', 'masked nodes all background'),
             ('node_mixed', 'masked nodes mixed'),
             ('object_coverage', 'object patches masked'),
             ('masked_on_object', 'masked patches on an object'))
#: Validation images the mask-object alignment is measured on (the first
#: ones of the validation set, whole batches).
ALIGNMENT_IMAGES = 1000
#: Seed of the masks drawn for the alignment (depths and generator).
ALIGNMENT_SEED = 0


def mask_alignment_log(model, batches: Sequence[tuple],
                       max_images: int = ALIGNMENT_IMAGES,
                       seed: int = ALIGNMENT_SEED) -> dict:
    """How the masks a trained arm draws relate to the objects.

    At the model's current training progress (the end of training after
    ``runner.train()``), the masks the arm's mask source draws for the
    first validation batches (whole batches, until ``max_images``), with
    the depths drawn from ``random.Random(seed)`` and the masks from a
    generator seeded with ``seed``: the model's own ``generate_masks``
    (affinity, then masks), outside the training step, which it does not
    change. Scored by
    :func:`~ehm_mm.evaluation.mask_alignment.masking_result_alignment`
    against the ``gt_object_mask`` of the samples, in percent.

    Args:
        model: The trained EHM model (``masking``, ``generate_masks``,
            ``current_progress``).
        batches (Sequence[tuple]): From :func:`_val_batches`.
        max_images (int): Images to use at least, whole batches.
            Defaults to :data:`ALIGNMENT_IMAGES`.
        seed (int): Seed of the draws. Defaults to :data:`ALIGNMENT_SEED`.

    Returns:
        dict: The mean over images of each :data:`ALIGNMENT` key (NaN
        images left out of their key's mean), ``progress``, ``seed`` and
        ``num_images``.

    Raises:
        KeyError: A validation sample has no ``gt_object_mask``.
    """
    import random

    import numpy as np
    import torch

    from ehm_mm.evaluation.mask_alignment import (
        masking_result_alignment,
        patch_object_ids,
    )
    progress = float(model.current_progress())
    values: Dict[str, list] = {key: [] for key, _ in ALIGNMENT}
    num_images = 0
    for inputs, samples in batches:
        if num_images >= max_images:
            break
        if any('gt_object_mask' not in s for s in samples):
            raise KeyError('the mask-object alignment needs gt_object_mask '
                           'in every validation sample (LoadObjectMask and '
                           "PackInputs(algorithm_keys=['gt_object_mask']))")
        batch = inputs.shape[0]
        depth = model.masking.draw_depths(progress, batch,
                                          random.Random(seed))
        generator = torch.Generator(device=inputs.device).manual_seed(seed)
        with torch.no_grad():
            result = model.generate_masks(inputs, progress,
                                          generator=generator, depth=depth)
        objects = torch.stack([
            torch.as_tensor(np.asarray(s.gt_object_mask)) for s in samples
        ])
        ids = patch_object_ids(objects, model.masking.grid_size)
        for key, value in masking_result_alignment(result, ids).items():
            values[key] += value.tolist()
        num_images += batch
    log = {}
    for key, _ in ALIGNMENT:
        finite = [v for v in values[key] if not math.isnan(v)]
        log[key] = (100.0 * sum(finite) / len(finite) if finite
                    else float('nan'))
    return dict(log, progress=progress, seed=seed, num_images=num_images)


def run_one(config: str,
            arm: str,
            seed: int,
            work_dir: str,
            quick: bool,
            threads: int,
            cfg_options: Sequence[str] = ()) -> dict:
    """Train one arm with one seed and write its ``result.json``.

    Args:
        config (str): Path of the study config.
        arm (str): Arm name.
        seed (int): Seed.
        work_dir (str): The run's folder.
        quick (bool): Smoke-test settings.
        threads (int): ``torch.set_num_threads``.
        cfg_options (Sequence[str]): ``KEY=VALUE`` overrides. Defaults to
            ().

    Returns:
        dict: The result written.
    """
    import torch
    torch.set_num_threads(threads)
    import ehm_mm  # noqa: F401  (registers modules)
    from ehm_mm.evaluation.metrics.attention_distance import (
        mean_attention_distance,
    )
    from ehm_mm.utils.launch import build_runner
    start = time.time()
    with open(osp.join(work_dir, RUNNING_FILE), 'w') as f:
        f.write(str(os.getpid()))
    cfg = build_run_config(config, arm, seed, work_dir, quick, cfg_options)
    digest = config_digest(cfg)
    runner = build_runner(cfg, 'none')
    revalidate = RevalidateSkippedHook()
    runner.register_hook(revalidate, priority='LOWEST')
    runner.train()
    train_s = time.time() - start
    with open(osp.join(work_dir, 'evaluation_summary.json')) as f:
        summary = json.load(f)
    if not summary['history'] or summary['history'][-1]['iter'] != (
            runner.iter):
        raise RuntimeError(
            f'{work_dir}: the run ended at iteration {runner.iter} but its '
            'last validation is at '
            f"{summary['history'][-1]['iter'] if summary['history'] else None}"
            '; the final metrics would be stale')
    model = runner.model
    device = next(model.parameters()).device
    model.eval()
    batches = _val_batches(runner, device)
    with torch.no_grad():
        distance = mean_attention_distance(
            model.backbone, torch.cat([inputs for inputs, _ in batches]))
    alignment = mask_alignment_log(model, batches)
    iters_per_epoch = len(runner.train_dataloader)
    history = []
    for entry in summary['history']:
        epoch = entry['iter'] / iters_per_epoch
        history.append(dict(epoch=epoch, metrics=entry['metrics']))
    result = dict(
        arm=arm,
        seed=seed,
        config_digest=digest,
        final=summary['end'],
        history=history,
        revalidated_epoch=revalidate.revalidated,
        mask_node_size=node_size_log(runner, iters_per_epoch),
        mask_alignment=alignment,
        attention_distance=[float(v) for v in distance],
        wall_s=time.time() - start,
        train_s=train_s,
        threads=threads,
        device=str(device),
        torch=torch.__version__)
    tmp = osp.join(work_dir, RESULT_FILE + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, osp.join(work_dir, RESULT_FILE))
    os.remove(osp.join(work_dir, RUNNING_FILE))
    return result


def run_dir(out: str, arm: str, seed: int) -> str:
    """The folder of one run."""
    return osp.join(out, 'runs', arm, f'seed{seed}')


def run_one_command(args: argparse.Namespace, arm: str, seed: int,
                    folder: str) -> List[str]:
    """The command that trains run ``(arm, seed)`` in one local process."""
    return [
        sys.executable,
        osp.abspath(__file__), args.config, '--out', args.out, '--threads',
        str(args.threads), '--run-one', arm,
        str(seed), folder
    ] + (['--quick'] if args.quick else []) + (
        ['--cfg-options', *args.cfg_options] if args.cfg_options else [])


def launch_all(args: argparse.Namespace,
               todo: List[tuple],
               command: Optional[Callable[..., List[str]]] = None,
               slots: Optional[Sequence[Dict[str, str]]] = None
               ) -> List[tuple]:
    """Run the pending runs, ``--jobs`` at a time, each in a process.

    Args:
        args (argparse.Namespace): The command line.
        todo (list[tuple]): ``(arm, seed)`` pairs.
        command (Callable, optional): ``(args, arm, seed, folder) ->
            command`` of one run. Defaults to None
            (:func:`run_one_command`).
        slots (Sequence[dict], optional): Environment of each of the
            parallel places a run can take (its GPUs); as many runs at a
            time as slots. Defaults to None: ``--jobs`` places, no change.

    Returns:
        list[tuple]: ``(arm, seed, returncode)`` of the failed runs.
    """
    command = command or run_one_command
    slots = list(slots) if slots else [{}] * max(1, args.jobs)
    env = dict(os.environ)
    for key in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        env[key] = str(args.threads)
    root = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
    env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
    if args.device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
    pending, running, failed = list(todo), [], []
    free = list(range(len(slots)))
    while pending or running:
        while pending and free:
            arm, seed = pending.pop(0)
            slot = free.pop(0)
            folder = run_dir(args.out, arm, seed)
            os.makedirs(folder, exist_ok=True)
            log = open(osp.join(folder, 'run.log'), 'a')
            print(f'[study] start {arm} seed {seed} ({folder})', flush=True)
            running.append((arm, seed, time.time(), log, slot,
                            subprocess.Popen(
                                command(args, arm, seed, folder), stdout=log,
                                stderr=subprocess.STDOUT,
                                env=dict(env, **slots[slot]))))
        time.sleep(0.5)
        for item in list(running):
            arm, seed, started, log, slot, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            free.append(slot)
            log.close()
            took = time.time() - started
            if proc.returncode:
                failed.append((arm, seed, proc.returncode))
                print(f'[study] FAILED {arm} seed {seed} (exit '
                      f'{proc.returncode}, {took:.0f} s); see '
                      f'{run_dir(args.out, arm, seed)}/run.log', flush=True)
            else:
                print(f'[study] done {arm} seed {seed} ({took:.0f} s)',
                      flush=True)
    return failed


# -------------------------------------------------------------- statistics
def t_quantile(df: int) -> float:
    """Two-sided 95% Student t quantile (1.96 beyond df = 30)."""
    if df < 1:
        return float('nan')
    return _T975[df - 1] if df <= len(_T975) else 1.96


def paired_difference(arm: Dict[int, float],
                      base: Dict[int, float]) -> dict:
    """Mean paired difference ``arm - base`` over shared seeds, 95% t CI.

    Args:
        arm (dict): Seed -> value.
        base (dict): Seed -> value of the baseline.

    Returns:
        dict: ``mean``, ``low``, ``high``, ``n`` (shared seeds).
    """
    seeds = sorted(set(arm) & set(base))
    diffs = [arm[s] - base[s] for s in seeds]
    mean, sd = mean_sd(diffs)
    half = t_quantile(len(diffs) - 1) * sd / math.sqrt(max(len(diffs), 1))
    return dict(mean=mean, low=mean - half, high=mean + half, n=len(seeds))


def mean_curve(results: List[dict], key: str) -> List[tuple]:
    """Seed-mean of a metric at every validated epoch all seeds share."""
    by_epoch: Dict[float, List[float]] = {}
    for result in results:
        for entry in result['history']:
            if key in entry['metrics']:
                by_epoch.setdefault(round(entry['epoch'], 6),
                                    []).append(entry['metrics'][key])
    return [(epoch, sum(v) / len(v)) for epoch, v in sorted(by_epoch.items())
            if len(v) == len(results)]


def contrast_differences(results: List[dict], arms: Sequence[str],
                         reference: Sequence[str],
                         key: str) -> Dict[int, float]:
    """Per-seed difference between the means of two groups of arms.

    Args:
        results (list[dict]): ``result.json`` contents.
        arms (Sequence[str]): The group tested.
        reference (Sequence[str]): The group it is compared with.
        key (str): The metric.

    Returns:
        dict[int, float]: Seed -> group mean of ``arms`` minus group mean of
        ``reference``, for every seed that finished all arms of both.
    """
    values: Dict[str, Dict[int, float]] = {}
    for result in results:
        if key in result['final']:
            values.setdefault(result['arm'],
                              {})[result['seed']] = result['final'][key]

    def group(names: Sequence[str]) -> Dict[int, float]:
        seeds = set.intersection(*(set(values.get(n, {})) for n in names))
        return {
            s: sum(values[n][s] for n in names) / len(names)
            for s in seeds
        }

    tested, base = group(arms), group(reference)
    return {s: tested[s] - base[s] for s in sorted(set(tested) & set(base))}


def contrast(results: List[dict], arms: Sequence[str],
             reference: Sequence[str], key: str) -> dict:
    """The per-seed :func:`contrast_differences` averaged, 95% t interval.

    Arguments as :func:`contrast_differences`; returns ``mean``, ``low``,
    ``high`` and ``n`` (:func:`paired_difference`).
    """
    diffs = contrast_differences(results, arms, reference, key)
    return paired_difference(diffs, {s: 0.0 for s in diffs})


# ------------------------------------------------------- pre-registration
class PreregistrationError(ValueError):
    """A pre-registration that is incomplete or names unknown things."""


def check_preregistration(prereg: dict, contrasts: Sequence[dict],
                          metric_keys: Sequence[str]) -> dict:
    """Validate ``study_preregistration`` against the study.

    Args:
        prereg (dict): ``primary_endpoints`` (metric keys),
            ``primary_contrasts`` (names in ``study_contrasts``),
            ``equivalence_margin`` (endpoint -> margin > 0, every primary
            endpoint), ``alpha``, ``num_seeds`` (>= 2) and optionally
            ``exploratory_contrasts`` and free-text ``registered``,
            ``amended`` (when and why it was changed, before the main run)
            and ``rationale``.
        contrasts (Sequence[dict]): The study's ``study_contrasts``. A
            contrast that says ``primary=True`` must be registered.
        metric_keys (Sequence[str]): The study's metric keys.

    Returns:
        dict: The pre-registration with lists and floats normalised.
    """
    required = ('primary_endpoints', 'primary_contrasts',
                'equivalence_margin', 'alpha', 'num_seeds')
    absent = [k for k in required if k not in prereg]
    if absent:
        raise PreregistrationError(
            f'study_preregistration lacks {absent}; it needs {required}')
    known = {'exploratory_contrasts', 'registered', 'amended', 'rationale',
             *required}
    unknown = sorted(set(prereg) - known)
    if unknown:
        raise PreregistrationError(
            f'study_preregistration has unknown keys {unknown}')
    names = [c['name'] for c in contrasts]
    endpoints = list(prereg['primary_endpoints'])
    primary = list(prereg['primary_contrasts'])
    exploratory = list(prereg.get('exploratory_contrasts', []))
    if not endpoints or not primary:
        raise PreregistrationError(
            'study_preregistration needs at least one primary endpoint and '
            'one primary contrast')
    bad = [m for m in endpoints if m not in metric_keys]
    if bad:
        raise PreregistrationError(
            f'primary endpoints {bad} are not metrics of the study '
            f'({list(metric_keys)})')
    for label, group in (('primary', primary), ('exploratory', exploratory)):
        bad = [c for c in group if c not in names]
        if bad:
            raise PreregistrationError(
                f'{label} contrasts {bad} are not in study_contrasts '
                f'({names})')
    both = sorted(set(primary) & set(exploratory))
    if both:
        raise PreregistrationError(
            f'contrasts {both} are registered both primary and exploratory')
    unregistered = [
        c['name'] for c in contrasts
        if c.get('primary') and c['name'] not in primary
    ]
    if unregistered:
        raise PreregistrationError(
            f'contrasts {unregistered} call themselves primary but '
            'study_preregistration does not register them; only '
            f'{primary} are primary')
    margins = {k: float(v) for k, v in dict(prereg['equivalence_margin'])
               .items()}
    bad = [m for m in endpoints if not margins.get(m, 0.0) > 0]
    if bad:
        raise PreregistrationError(
            f'equivalence_margin needs a margin > 0 for primary endpoints '
            f'{bad}')
    alpha = float(prereg['alpha'])
    if not 0.0 < alpha < 0.5:
        raise PreregistrationError(f'alpha must be in (0, 0.5), got {alpha}')
    num_seeds = prereg['num_seeds']
    if not isinstance(num_seeds, int) or num_seeds < 2:
        raise PreregistrationError(
            f'num_seeds must be an int >= 2, got {num_seeds!r}')
    return dict(prereg, primary_endpoints=endpoints,
                primary_contrasts=primary,
                exploratory_contrasts=exploratory,
                equivalence_margin=margins, alpha=alpha)


def preregistered_analysis(results: List[dict], contrasts: Sequence[dict],
                           prereg: dict,
                           metric_keys: Sequence[str]) -> dict:
    """The pre-registered tests and the labelled exploratory rest.

    Primary cells are the registered contrasts x the registered endpoints:
    each gets its paired t test (two-sided, the "better" claim) with a
    Holm-adjusted p over all primary cells (the declared family), and TOST
    at the registered margin (the "no difference" claim). Its verdict:
    ``'better'`` / ``'worse'`` when the Holm p < alpha, ``'equivalent'``
    when TOST's p < alpha, otherwise ``'undetermined'``; a cell with fewer
    seeds than registered is ``'incomplete'`` whatever its p. Every other
    (contrast, metric) cell is ``exploratory``: t interval and unadjusted p,
    no verdict.

    Args:
        results (list[dict]): ``result.json`` contents.
        contrasts (Sequence[dict]): The study's contrasts.
        prereg (dict): From :func:`check_preregistration`.
        metric_keys (Sequence[str]): The study's metrics.

    Returns:
        dict: ``primary`` and ``exploratory`` lists of cells (``contrast``,
        ``metric``, ``seeds``, the t test fields, and for primary cells
        ``p_holm``, ``tost``, ``verdict``), and ``prereg``.
    """
    by_name = {c['name']: c for c in contrasts}
    alpha = prereg['alpha']
    primary, exploratory = [], []
    for spec in contrasts:
        for key in metric_keys:
            diffs = contrast_differences(results, spec['arms'],
                                         spec['reference'], key)
            cell = dict(contrast=spec['name'], metric=key,
                        seeds=sorted(diffs),
                        **paired_t_test(list(diffs.values())))
            if (spec['name'] in prereg['primary_contrasts']
                    and key in prereg['primary_endpoints']):
                margin = prereg['equivalence_margin'][key]
                cell['tost'] = (tost(list(diffs.values()), margin, alpha)
                                if len(diffs) >= 2 else None)
                primary.append(cell)
            else:
                exploratory.append(cell)
    assert all(c['contrast'] in by_name for c in primary)
    tested = [c for c in primary if not math.isnan(c['p'])]
    for cell, p_holm in zip(tested, holm([c['p'] for c in tested])):
        cell['p_holm'] = p_holm
    for cell in primary:
        cell.setdefault('p_holm', float('nan'))
        if cell['n'] < prereg['num_seeds']:
            cell['verdict'] = 'incomplete'
        elif cell['p_holm'] < alpha:
            cell['verdict'] = 'better' if cell['mean'] > 0 else 'worse'
        elif cell['tost'] is not None and cell['tost']['equivalent']:
            cell['verdict'] = 'equivalent'
        else:
            cell['verdict'] = 'undetermined'
    return dict(prereg=prereg, primary=primary, exploratory=exploratory)


def alignment_summary(runs: Sequence[dict]) -> Optional[dict]:
    """Seed means of the runs' ``mask_alignment`` (:func:`mask_alignment_log`).

    Args:
        runs (Sequence[dict]): One arm's ``result.json`` contents.

    Returns:
        dict or None: Mean and sd over the runs of each :data:`ALIGNMENT`
        key (NaN runs left out), ``runs``; None when no run measured it.
    """
    logs = [r['mask_alignment'] for r in runs if r.get('mask_alignment')]
    if not logs:
        return None
    out = dict(runs=len(logs))
    for key, _ in ALIGNMENT:
        values = [log[key] for log in logs if not math.isnan(log[key])]
        mean, sd = mean_sd(values)  # NaN, NaN when empty
        out[key] = dict(mean=mean, sd=sd)
    return out


def summarise(results: List[dict], baseline: str,
              arm_order: Sequence[str],
              contrasts: Sequence[dict] = (),
              metrics: Sequence[tuple] = METRICS) -> dict:
    """Aggregate the finished runs.

    Args:
        results (list[dict]): ``result.json`` contents.
        baseline (str): The arm differences are taken against.
        arm_order (Sequence[str]): Arms in report order.
        contrasts (Sequence[dict]): Planned comparisons, each with
            ``name``, ``arms`` and ``reference`` (lists of arm names), see
            :func:`contrast`. Defaults to ().
        metrics (Sequence[tuple]): ``(key, name)`` of the metrics to
            report. Defaults to :data:`METRICS`.

    Returns:
        dict: Per arm: seeds, per-metric values / mean / sd / paired
        difference / first epoch reaching the baseline's final mean, mean
        curves, attention distances, the mean masked node size and the
        mask-object alignment (:func:`alignment_summary`); per
        contrast: the paired difference of every metric.
    """
    by_arm: Dict[str, List[dict]] = {}
    for result in results:
        by_arm.setdefault(result['arm'], []).append(result)
    base_runs = by_arm.get(baseline, [])
    summary = dict(baseline=baseline, arms={},
                   metrics=[list(m) for m in metrics])
    for arm in arm_order:
        runs = sorted(by_arm.get(arm, []), key=lambda r: r['seed'])
        if not runs:
            continue
        entry = dict(seeds=[r['seed'] for r in runs], metrics={})
        for key, _ in metrics:
            values = {r['seed']: r['final'][key] for r in runs
                      if key in r['final']}
            if not values:
                continue
            base = {r['seed']: r['final'][key] for r in base_runs
                    if key in r['final']}
            mean, sd = mean_sd(list(values.values()))
            base_mean = mean_sd(list(base.values()))[0] if base else None
            curve = mean_curve(runs, key)
            reach = None
            if base_mean is not None:
                reach = next((e for e, v in curve if v >= base_mean), None)
            entry['metrics'][key] = dict(
                values=values,
                mean=mean,
                sd=sd,
                diff=paired_difference(values, base) if base else None,
                curve=curve,
                first_epoch_reaching_baseline=reach)
        distances = [r['attention_distance'] for r in runs]
        entry['attention_distance'] = [
            sum(col) / len(col) for col in zip(*distances)
        ]
        entry['wall_s'] = mean_sd([r['wall_s'] for r in runs])[0]
        sizes = [r['mask_node_size'] for r in runs if r.get('mask_node_size')]
        entry['mask_node_size'] = None if not sizes else dict(
            mean=mean_sd([z['mean'] for z in sizes])[0],
            last_epoch=mean_sd([z['per_epoch'][-1] for z in sizes])[0],
            runs=len(sizes))
        entry['mask_alignment'] = alignment_summary(runs)
        summary['arms'][arm] = entry
    summary['contrasts'] = []
    for spec in contrasts:
        arms, reference = list(spec['arms']), list(spec['reference'])
        unknown = [a for a in arms + reference if a not in arm_order]
        if unknown:
            raise ValueError(f"contrast {spec['name']!r} names arms "
                             f'{unknown} that are not in the study')
        summary['contrasts'].append(
            dict(name=spec['name'], arms=arms, reference=reference,
                 metrics={key: contrast(results, arms, reference, key)
                          for key, _ in metrics}))
    return summary


# ----------------------------------------------------------------- reports
def _fmt(value: Optional[float], digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '-'
    return f'{value:.{digits}f}'


def markdown_table(summary: dict) -> str:
    """The report as markdown tables.

    Args:
        summary (dict): From :func:`summarise`.

    Returns:
        str: Markdown.
    """
    baseline = summary['baseline']
    metrics = [tuple(m) for m in summary.get('metrics', METRICS)]
    lines = [
        f'Mean +- sd over seeds; "vs {baseline}" is the mean paired '
        'difference with its 95% t interval.', ''
    ]
    head = ['arm', 'seeds']
    for _, name in metrics:
        head += [name, f'vs {baseline}']
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('|' + '---|' * len(head))
    for arm, entry in summary['arms'].items():
        row = [arm, str(len(entry['seeds']))]
        for key, _ in metrics:
            m = entry['metrics'].get(key)
            if m is None:
                row += ['-', '-']
                continue
            row.append(f"{_fmt(m['mean'])} +- {_fmt(m['sd'])}")
            d = m['diff']
            if d is None or arm == baseline:
                row.append('-')
            elif d['n'] < 2:
                row.append(f"{d['mean']:+.1f} (1 seed)")
            else:
                row.append(f"{d['mean']:+.1f} [{d['low']:+.1f}, "
                           f"{d['high']:+.1f}]")
        lines.append('| ' + ' | '.join(row) + ' |')
    lines += [
        '', f'First validated epoch at which the seed-mean reaches the '
        f'{baseline} arm\'s final mean ("-": never):', ''
    ]
    head = ['arm'] + [name for _, name in metrics]
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('|' + '---|' * len(head))
    for arm, entry in summary['arms'].items():
        row = [arm]
        for key, _ in metrics:
            m = entry['metrics'].get(key)
            row.append(_fmt(m and m['first_epoch_reaching_baseline'], 0))
        lines.append('| ' + ' | '.join(row) + ' |')
    if summary.get('contrasts'):
        lines += [
            '', 'Planned contrasts: mean paired difference (arms - '
            'reference, groups averaged per seed) [95% t interval], seeds:',
            ''
        ]
        head = ['contrast', 'arms', 'reference'] + [
            name for _, name in metrics
        ]
        lines.append('| ' + ' | '.join(head) + ' |')
        lines.append('|' + '---|' * len(head))
        for spec in summary['contrasts']:
            row = [spec['name'], ', '.join(spec['arms']),
                   ', '.join(spec['reference'])]
            for key, _ in metrics:
                d = spec['metrics'][key]
                if d['n'] == 0:
                    row.append('- (n=0)')
                elif d['n'] == 1:
                    row.append(f"{d['mean']:+.1f} (n=1)")
                else:
                    row.append(f"{d['mean']:+.1f} [{d['low']:+.1f}, "
                               f"{d['high']:+.1f}], n={d['n']}")
            lines.append('| ' + ' | '.join(row) + ' |')
    num_layers = max(
        (len(e['attention_distance']) for e in summary['arms'].values()),
        default=0)
    if num_layers == 0:
        lines += ['', NOT_MEASURED.format(what='Mean attention distance')]
        return '\n'.join(lines) + '\n'
    lines += ['', 'Mean attention distance per encoder layer (pixels):', '']
    head = ['arm'] + [f'layer {i}' for i in range(num_layers)]
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('|' + '---|' * len(head))
    for arm, entry in summary['arms'].items():
        lines.append('| ' + ' | '.join(
            [arm] + [_fmt(v) for v in entry['attention_distance']]) + ' |')
    return '\n'.join(lines) + '\n'


def write_csv(results: List[dict], path: str,
              metrics: Sequence[tuple] = METRICS) -> None:
    """One row per run: arm, seed, final metrics, wall time.

    Args:
        results (list[dict]): ``result.json`` contents.
        path (str): The file, written atomically.
        metrics (Sequence[tuple]): ``(key, name)`` of the metric columns.
            Defaults to :data:`METRICS`.
    """
    import csv
    keys = [key for key, _ in metrics]
    num_layers = max((len(r['attention_distance']) for r in results),
                     default=0)
    with atomic_open(path, newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['arm', 'seed'] + keys +
                        [f'attn_dist_l{i}' for i in range(num_layers)] +
                        ['wall_s'])
        for r in sorted(results, key=lambda r: (r['arm'], r['seed'])):
            writer.writerow([r['arm'], r['seed']] +
                            [r['final'].get(k, '') for k in keys] +
                            list(r['attention_distance']) +
                            [round(r['wall_s'], 1)])


def arm_styles(arms: Sequence[str], baseline: str) -> Dict[str, dict]:
    """One distinguishable line style per arm for the curve plots.

    Colours cycle through the 10 of matplotlib's ``tab10``; every further
    10 arms change the line style and marker, so up to 30 arms get unique
    (colour, line, marker) triples. The baseline is a thick black line.

    Args:
        arms (Sequence[str]): The arms, in plotting order.
        baseline (str): The baseline arm.

    Returns:
        dict[str, dict]: ``Axes.plot`` keyword arguments per arm.
    """
    lines, markers = ('-', '--', ':'), ('o', 's', '^')
    styles, k = {}, 0
    for arm in arms:
        if arm == baseline:
            styles[arm] = dict(color='k', linestyle='-', marker='o',
                               linewidth=2.5)
            continue
        cycle = (k // 10) % len(lines)
        styles[arm] = dict(color=f'C{k % 10}', linestyle=lines[cycle],
                           marker=markers[cycle], linewidth=1.2)
        k += 1
    return styles


def _legend_right(fig: 'Figure', ax: 'Axes') -> None:
    """Lay out ``fig`` with the legend of ``ax`` right of the plots."""
    fig.tight_layout()
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.)


def plot(summary: dict, out: str) -> List[str]:
    """Bar charts of the final metrics, curves, attention distances.

    Args:
        summary (dict): From :func:`summarise`.
        out (str): Folder for the PNG files.

    Returns:
        list[str]: The files written.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    arms = list(summary['arms'])
    metrics = [tuple(m) for m in summary.get('metrics', METRICS)]
    files = []
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4))
    for ax, (key, name) in zip(axes, metrics):
        for x, arm in enumerate(arms):
            m = summary['arms'][arm]['metrics'].get(key)
            if not m:
                continue
            seeds = list(m['values'].values())
            ax.plot([x] * len(seeds), seeds, '.', color='0.6', markersize=4)
            ax.errorbar([x], [m['mean']],
                        yerr=[0.0 if math.isnan(m['sd']) else m['sd']],
                        fmt='o', capsize=3,
                        color='k' if arm == summary['baseline'] else
                        'tab:blue')
            if arm == summary['baseline']:
                ax.axhline(m['mean'], color='k', linestyle=':', linewidth=1)
        ax.set_xlim(-0.5, len(arms) - 0.5)
        ax.set_xticks(range(len(arms)))
        ax.set_xticklabels(arms, rotation=60, ha='right', fontsize=8)
        ax.set_title(f'{name} (mean +- sd, seeds)', fontsize=9)
    fig.tight_layout()
    files.append(osp.join(out, 'final_metrics.png'))
    fig.savefig(files[-1], dpi=80)
    plt.close(fig)

    styles = arm_styles(arms, summary['baseline'])
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4))
    for ax, (key, name) in zip(axes, metrics):
        for arm in arms:
            m = summary['arms'][arm]['metrics'].get(key)
            if m and m['curve']:
                epochs, values = zip(*m['curve'])
                ax.plot(epochs, values, markersize=3, label=arm,
                        **styles[arm])
        ax.set_xlabel('epoch')
        ax.set_title(name)
    _legend_right(fig, axes[-1])
    files.append(osp.join(out, 'metric_curves.png'))
    fig.savefig(files[-1], dpi=80, bbox_inches='tight')
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    for arm in arms:
        dist = summary['arms'][arm]['attention_distance']
        ax.plot(range(len(dist)), dist, markersize=4, label=arm,
                **styles[arm])
    ax.set_xlabel('encoder layer')
    ax.set_ylabel('mean attention distance (px)')
    _legend_right(fig, ax)
    files.append(osp.join(out, 'attention_distance.png'))
    fig.savefig(files[-1], dpi=80, bbox_inches='tight')
    plt.close(fig)
    return files


# --------------------------------------------------------------- baselines
BASELINES_FILE = 'baselines.json'


def _val_samples(cfg) -> tuple:
    """The validation set of ``cfg`` as tensors, through its pipeline.

    Returns:
        tuple: ``images [M, 3, H, W]`` (0-255), ``masks [M, H, W]``, a list
        of per-sample dicts (``gt_label``, ``gt_object_mask`` and the meta
        fields such as ``knn_bank``).
    """
    import numpy as np
    import torch
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    images, masks, samples = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        images.append(item['inputs'])
        sample = item['data_samples'].to_dict()
        masks.append(torch.as_tensor(np.asarray(sample['gt_object_mask'])))
        samples.append(sample)
    return torch.stack(images).float(), torch.stack(masks), samples


def raw_pixel_figures(cfg, images, masks, samples) -> dict:
    """The study's probes on features that need no learning.

    Raw pixels (the mean-colour thumbnail on the model's patch grid for the
    image probes, each patch's mean colour for the segmentation probe) and
    colour alone (a joint RGB histogram, image probes only), through the
    metrics of ``cfg.val_evaluator`` (HierarchyIoU excluded); then the
    floors: best-IoU of the root alone and of noise trees, the mIoU of
    predicting background everywhere on the segmentation probe's test
    split.

    Returns:
        dict: ``raw_pixels``, ``colour_histogram`` and ``floors``, each a
        metric dict keyed like the runs' results.
    """
    import torch
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import METRICS

    from ehm_mm.evaluation.metrics import PatchSegProbe
    from ehm_mm.evaluation.study_baselines import (
        all_background_miou,
        colour_histogram_features,
        noise_tree_best_iou,
        patch_colour_features,
        root_only_best_iou,
    )
    init_default_scope('mmpretrain')
    backbone = cfg.model.backbone
    grid = (backbone.img_size // backbone.patch_size, ) * 2
    patches = patch_colour_features(images, grid)
    features = dict(raw_pixels=patches.flatten(1),
                    colour_histogram=colour_histogram_features(images))
    out, background = {}, None
    for name, feats in features.items():
        figures = {}
        for metric_cfg in cfg.val_evaluator:
            if metric_cfg['type'] == 'HierarchyIoU':
                continue
            metric = METRICS.build(dict(metric_cfg))
            if isinstance(metric, PatchSegProbe) and (
                    name == 'colour_histogram'):
                continue
            batch = [
                dict(s, feature=feats[i], patch_features=patches[i])
                for i, s in enumerate(samples)
            ]
            metric.process({}, batch)
            for key, value in metric.compute_metrics(metric.results).items():
                figures[f'{metric.prefix}/{key}'] = float(value)
            if isinstance(metric, PatchSegProbe) and name == 'raw_pixels':
                _, test = metric.probe.split(len(metric.results))
                labels = torch.cat([metric.results[i][1]
                                    for i in test.tolist()])
                background = all_background_miou(labels, metric.num_classes)
        out[name] = figures
    generator = torch.Generator().manual_seed(0)
    out['floors'] = {
        'hierarchy/best_iou (root only)':
        100.0 * float(root_only_best_iou(masks, grid).mean()),
        'hierarchy/best_iou (noise trees)':
        100.0 * float(noise_tree_best_iou(masks, grid, generator).mean()),
    }
    if background is not None:
        out['floors']['segprobe/mIoU (all background)'] = background
    return out


def untrained_figures(config: str, arm: str, seed: int, work_dir: str,
                      quick: bool, cfg_options: Sequence[str] = ()) -> dict:
    """The validation metrics of ``arm``'s model at initialisation.

    Args:
        config (str): Study config.
        arm (str): The arm whose model is built (the baseline arm).
        seed (int): Seed of the initialisation.
        work_dir (str): Scratch work dir of the runner.
        quick (bool): ``--quick``.
        cfg_options (Sequence[str]): ``--cfg-options``. Defaults to ().

    Returns:
        dict: Metric -> value.
    """
    import ehm_mm  # noqa: F401
    from ehm_mm.utils.launch import build_runner
    cfg = build_run_config(config, arm, seed, work_dir, quick, cfg_options)
    cfg.resume = False
    runner = build_runner(cfg, 'none')
    return {k: float(v) for k, v in runner.val().items()}


def compute_baselines(config: str, out: str, arm: str,
                      seeds: Sequence[int], quick: bool,
                      cfg_options: Sequence[str] = ()) -> dict:
    """Write ``baselines.json``: raw pixels, colour, floors, untrained.

    Finished parts are kept (the untrained encoder per seed, the
    model-free figures once), so an interrupted call resumes.

    Args:
        config (str): Study config.
        out (str): Study folder.
        arm (str): Arm whose untrained model is measured (the baseline).
        seeds (Sequence[int]): Seeds of the untrained encoder.
        quick (bool): ``--quick``.
        cfg_options (Sequence[str]): ``--cfg-options``. Defaults to ().

    Returns:
        dict: The baselines.
    """
    path = osp.join(out, BASELINES_FILE)
    cfg = build_run_config(config, arm, seeds[0], '', quick, cfg_options)
    digest = config_digest(cfg)
    baselines = {}
    if osp.exists(path):
        with open(path) as f:
            baselines = json.load(f)
        if baselines.get('config_digest') != digest:
            baselines = {}
    baselines['config_digest'] = digest

    def save() -> None:
        with atomic_open(path) as f:
            json.dump(baselines, f, indent=1)

    if 'raw_pixels' not in baselines:
        baselines.update(raw_pixel_figures(cfg, *_val_samples(cfg)))
        save()
    untrained = baselines.setdefault('untrained', {})
    for seed in seeds:
        if str(seed) not in untrained:
            untrained[str(seed)] = untrained_figures(
                config, arm, seed,
                osp.join(out, 'baselines', f'untrained_seed{seed}'), quick,
                cfg_options)
            save()
    return baselines


def baselines_table(baselines: dict, metrics: Sequence[tuple]) -> str:
    """Markdown of :func:`compute_baselines`'s figures beside the arms'.

    Args:
        baselines (dict): Its output.
        metrics (Sequence[tuple]): ``(key, name)`` of the study's metrics.

    Returns:
        str: One row per baseline, the study's metric columns.
    """
    rows = []
    untrained = list(baselines.get('untrained', {}).values())
    if untrained:
        cells = []
        for key, _ in metrics:
            mean, sd = mean_sd([u[key] for u in untrained if key in u])
            cells.append(f'{_fmt(mean)} +- {_fmt(sd)}')
        rows.append([f'untrained encoder ({len(untrained)} seeds)'] + cells)
    for name, label in (('raw_pixels', 'raw pixels (patch mean colour)'),
                        ('colour_histogram', 'colour histogram (no layout)')):
        figures = baselines.get(name, {})
        rows.append([label] + [_fmt(figures.get(key)) for key, _ in metrics])
    for floor, value in baselines.get('floors', {}).items():
        key = floor.split(' (')[0]
        rows.append([f'floor: {floor.split(" (")[1][:-1]}'] + [
            _fmt(value) if k == key else '' for k, _ in metrics
        ])
    lines = ['', 'Baselines (no pretraining):', '',
             '| baseline | ' + ' | '.join(n for _, n in metrics) + ' |',
             '|' + '---|' * (len(metrics) + 1)]
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines) + '\n'


@contextlib.contextmanager
def atomic_open(path: str, newline: Optional[str] = None):
    """Open ``path`` for writing text so that a kill never leaves it half.

    Writes ``path.tmp`` and renames it over ``path`` on success (the rename
    is atomic on POSIX); on an exception the temp file is removed and
    ``path`` keeps its old content.

    Args:
        path (str): The file.
        newline (str, optional): As :func:`open`. Defaults to None.

    Yields:
        TextIO: The open temp file.
    """
    tmp = path + '.tmp'
    try:
        with open(tmp, 'w', newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


class StudyResultError(ValueError):
    """A run's ``result.json`` that the report must not use."""


def load_result(path: str, arm: str, seed: int,
                digest: Optional[str],
                required_metrics: Sequence[str]) -> dict:
    """Read one ``result.json`` and check that it belongs where it lies.

    Args:
        path (str): The file, ``runs/<arm>/seed<seed>/result.json``.
        arm (str): The arm its folder names.
        seed (int): The seed its folder names.
        digest (str, optional): The config digest of that run (see
            :func:`run_digest`); None skips the digest check.
        required_metrics (Sequence[str]): Final metrics it must hold, as
            finite numbers.

    Returns:
        dict: The result.

    Raises:
        StudyResultError: Naming the file and what is wrong: unreadable or
            not JSON, another arm or seed than its folder, no or another
            config digest, a missing, non-numeric or non-finite metric.
    """
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StudyResultError(
            f'{path}: unreadable result ({type(e).__name__}: {e})') from e
    if not isinstance(result, dict):
        raise StudyResultError(f'{path}: holds a {type(result).__name__}, '
                               'not a result object')
    if result.get('arm') != arm:
        raise StudyResultError(
            f"{path}: records arm {result.get('arm')!r} but lies in the "
            f'folder of arm {arm!r} (copied or moved?)')
    if result.get('seed') != seed:
        raise StudyResultError(
            f"{path}: records seed {result.get('seed')!r} but lies in the "
            f'folder of seed {seed}')
    if digest is not None:
        recorded = result.get('config_digest')
        if recorded is None:
            raise StudyResultError(
                f'{path}: records no config digest (written by a tool '
                'before result integrity checks); rerun it')
        if recorded != digest:
            raise StudyResultError(
                f'{path}: config digest {recorded[:12]}... does not match '
                f'this study\'s config for {arm} seed {seed} '
                f'({digest[:12]}...): the config, the arm or --cfg-options '
                'differ from the run\'s (pass the same --cfg-options, or '
                'rerun it)')
    final = result.get('final')
    if not isinstance(final, dict):
        raise StudyResultError(f'{path}: has no final metrics')
    for key in required_metrics:
        if key not in final:
            raise StudyResultError(
                f'{path}: lacks the final metric {key!r} (declare it in '
                'study_missing_metrics if the arm cannot produce it)')
        value = final[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StudyResultError(
                f'{path}: final metric {key!r} is {value!r}, not a number')
        if not math.isfinite(value):
            raise StudyResultError(
                f'{path}: final metric {key!r} is {value}, not finite')
    for key in ('history', 'attention_distance'):
        if not isinstance(result.get(key), list):
            raise StudyResultError(f'{path}: {key!r} is missing or not a '
                                   'list')
    if not isinstance(result.get('wall_s'), (int, float)):
        raise StudyResultError(f"{path}: 'wall_s' is missing")
    return result


def missing_validations(result: dict,
                        expected_epochs: Sequence[int]) -> List[int]:
    """Expected validation epochs that a result's history lacks.

    Args:
        result (dict): A ``result.json``.
        expected_epochs (Sequence[int]): From
            :func:`expected_validation_epochs`.

    Returns:
        list[int]: The epochs without a validation.
    """
    done = {round(entry['epoch']) for entry in result['history']}
    return [e for e in expected_epochs if e not in done]


def preregistration_table(analysis: dict) -> str:
    """Markdown of :func:`preregistered_analysis`.

    Args:
        analysis (dict): Its output.

    Returns:
        str: The primary table (t test, Holm p over the primary cells, TOST
        at the margin, verdict) and the exploratory table.
    """
    prereg = analysis['prereg']
    alpha = prereg['alpha']
    dates = [
        f'{label.capitalize()}: {prereg[label]}.'
        for label in ('registered', 'amended') if prereg.get(label)
    ]
    lines = [
        '', f"Pre-registered primary analysis ({prereg['num_seeds']} seeds "
        f'registered; alpha {alpha}; Holm over the '
        f"{len(analysis['primary'])} primary cells; TOST at the margin):",
        *([''] + dates if dates else []),
        '', '| contrast | endpoint | seeds | mean [95% t] | p | Holm p | '
        'TOST p (margin) | verdict |', '|---|---|---|---|---|---|---|---|'
    ]
    for c in analysis['primary']:
        tost_cell = '-' if c['tost'] is None else (
            f"{c['tost']['p']:.3g} (+-{c['tost']['margin']:g})")
        lines.append(
            f"| {c['contrast']} | {c['metric']} | {c['n']} | "
            f"{_fmt_interval(c)} | {_fmt(c['p'], 3)} | "
            f"{_fmt(c['p_holm'], 3)} | {tost_cell} | {c['verdict']} |")
    lines += [
        '', 'Exploratory (not registered as primary; unadjusted p, no '
        'verdict):', '', '| contrast | metric | seeds | mean [95% t] | p |',
        '|---|---|---|---|---|'
    ]
    for c in analysis['exploratory']:
        lines.append(f"| {c['contrast']} | {c['metric']} | {c['n']} | "
                     f'{_fmt_interval(c)} | {_fmt(c["p"], 3)} |')
    return '\n'.join(lines) + '\n'


def _fmt_interval(cell: dict) -> str:
    if cell['n'] == 0:
        return '-'
    if cell['n'] == 1:
        return f"{cell['mean']:+.2f} (1 seed)"
    return f"{cell['mean']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}]"


#: What a table without any measured row says instead (runs of
#: ``--launcher torchrun|slurm`` measure only their stages' figures).
NOT_MEASURED = ('{what}: not measured by these runs (no run logged it; '
                'runs of --launcher torchrun|slurm report only their '
                'stages\' figures).')


def node_size_table(summary: dict) -> str:
    """Markdown of each arm's logged mean masked node size (patches)."""
    if all(entry.get('mask_node_size') is None
           for entry in summary['arms'].values()):
        return '\n' + NOT_MEASURED.format(what='Mean masked node size') + '\n'
    lines = [
        '', 'Mean masked node size (`mask_node_size`, patches; the split '
        'node counted whole):', '', '| arm | over training | last epoch |',
        '|---|---|---|'
    ]
    for arm, entry in summary['arms'].items():
        size = entry.get('mask_node_size')
        lines.append(f'| {arm} | ' + (
            '- | - |' if size is None else
            f"{size['mean']:.2f} | {size['last_epoch']:.2f} |"))
    return '\n'.join(lines) + '\n'


def alignment_table(summary: dict) -> str:
    """Markdown of each arm's mask-object alignment (:func:`summarise`)."""
    if all(entry.get('mask_alignment') is None
           for entry in summary['arms'].values()):
        return '\n' + NOT_MEASURED.format(what='Mask-object alignment') + '\n'
    lines = [
        '', 'Mask-object alignment (%, mean +- sd over seeds) of the masks '
        'each trained arm draws at the end of training (first '
        f'{ALIGNMENT_IMAGES} validation images, seed {ALIGNMENT_SEED}; '
        'nodes of the tree that made the masks, at the level they are cut '
        'from; a patch is a node for MAE and noise masks):', '',
        '| arm | ' + ' | '.join(name for _, name in ALIGNMENT) + ' |',
        '|' + '---|' * (len(ALIGNMENT) + 1)
    ]
    for arm, entry in summary['arms'].items():
        log = entry.get('mask_alignment')
        cells = ['-'] * len(ALIGNMENT) if log is None else [
            f"{_fmt(log[key]['mean'])} +- {_fmt(log[key]['sd'])}"
            for key, _ in ALIGNMENT
        ]
        lines.append(f'| {arm} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def report(out: str,
           baseline: str,
           arm_order: Sequence[str],
           seeds: Sequence[int],
           contrasts: Sequence[dict] = (),
           metrics: Sequence[tuple] = METRICS,
           digest: Optional[Callable[[str, int], str]] = None,
           missing_metrics: Optional[Dict[str, Sequence[str]]] = None,
           expected_epochs: Optional[Sequence[int]] = None,
           preregistration: Optional[dict] = None) -> dict:
    """Check the finished runs and write results.json/csv/md and plots.

    Every ``result.json`` goes through :func:`load_result`; a damaged one
    stops the report with a :class:`StudyResultError` naming it. The text
    files are written atomically (:func:`atomic_open`).

    Args:
        out (str): The study folder.
        baseline (str): The baseline arm.
        arm_order (Sequence[str]): Arms in report order.
        seeds (Sequence[int]): The seeds asked for (missing runs are
            listed).
        contrasts (Sequence[dict]): Planned comparisons (see
            :func:`summarise`); those naming arms outside ``arm_order``
            are left out. Defaults to ().
        metrics (Sequence[tuple]): ``(key, name)`` of the metrics; each run
            must hold them all. Defaults to :data:`METRICS`.
        digest (Callable, optional): ``(arm, seed) -> config digest`` that
            each result must record; None skips that check.
            Defaults to None.
        missing_metrics (dict, optional): Arm -> metric keys it is declared
            to lack (``study_missing_metrics``). Defaults to None.
        expected_epochs (Sequence[int], optional): Validation epochs every
            run should have; runs lacking some are listed. Defaults to None.
        preregistration (dict, optional): From
            :func:`check_preregistration`; adds the primary and exploratory
            tables. Defaults to None.

    Returns:
        dict: The summary (also in ``results.json``).
    """
    missing_metrics = dict(missing_metrics or {})
    results, missing = [], []
    for arm in arm_order:
        lacks = set(missing_metrics.get(arm, ()))
        required = [key for key, _ in metrics if key not in lacks]
        for seed in seeds:
            path = osp.join(run_dir(out, arm, seed), RESULT_FILE)
            if osp.exists(path):
                results.append(
                    load_result(path, arm, seed,
                                digest(arm, seed) if digest else None,
                                required))
            else:
                missing.append(dict(arm=arm, seed=seed))
    if not results:
        raise RuntimeError(f'no finished runs under {out}/runs')
    registered = list(contrasts)  # all of them: unrun ones are incomplete
    contrasts = [
        c for c in contrasts
        if all(a in arm_order for a in list(c['arms']) + list(c['reference']))
    ]
    summary = summarise(results, baseline, arm_order, contrasts, metrics)
    summary['missing'] = missing
    summary['missing_validations'] = [] if expected_epochs is None else [
        dict(arm=r['arm'], seed=r['seed'], epochs=gaps) for r in results
        for gaps in [missing_validations(r, expected_epochs)] if gaps
    ]
    table = (markdown_table(summary) + node_size_table(summary) +
             alignment_table(summary))
    if osp.exists(osp.join(out, BASELINES_FILE)):
        with open(osp.join(out, BASELINES_FILE)) as f:
            summary['baselines'] = json.load(f)
        table += baselines_table(summary['baselines'], metrics)
    if preregistration is not None:
        summary['preregistered'] = preregistered_analysis(
            results, registered, preregistration, [k for k, _ in metrics])
        table += preregistration_table(summary['preregistered'])
    summary['runs'] = results
    with atomic_open(osp.join(out, 'results.json')) as f:
        json.dump(summary, f, indent=1)
    write_csv(results, osp.join(out, 'results.csv'), metrics)
    if missing:
        table += '\nMissing runs: ' + ', '.join(
            f"{m['arm']}/seed{m['seed']}" for m in missing) + '\n'
    if summary['missing_validations']:
        table += '\nRuns missing validations (epochs): ' + ', '.join(
            f"{m['arm']}/seed{m['seed']} {m['epochs']}"
            for m in summary['missing_validations']) + '\n'
    with atomic_open(osp.join(out, 'results.md')) as f:
        f.write(table)
    summary['plots'] = plot(summary, out)
    print(table)
    return summary


# ------------------------------------------------ cluster (chains of jobs)
TOOLS_DIR = osp.abspath(osp.join(osp.dirname(__file__), '..'))


def cluster_study(args: argparse.Namespace, cfg) -> 'ClusterStudy':
    """The study's runs as chains of jobs (``--launcher torchrun/slurm``).

    Args:
        args (argparse.Namespace): The command line.
        cfg (Config): The study config (with ``study_evaluation``).

    Returns:
        ClusterStudy: Its pretraining configs are built without the AMP
        fallback (``tools/train.py`` falls back on the machine that
        trains), so a GPU job launched from a CPU host trains with AMP.
    """
    from ehm_mm.study import ClusterStudy, parse_evaluation_stages
    specs = cfg.get('study_evaluation')
    if not specs:
        raise SystemExit(
            f'--launcher {args.launcher} runs the evaluation chain listed in '
            f'study_evaluation, which {args.config} does not define (see '
            'docs/en/cluster_study.md)')
    stages = parse_evaluation_stages(specs, osp.dirname(TOOLS_DIR))
    return ClusterStudy(
        stages, lambda arm, seed: build_run_config(
            args.config, arm, seed, '', args.quick, args.cfg_options,
            amp_fallback=False), config_digest, TOOLS_DIR)


def stage_launcher(args: argparse.Namespace) -> 'StageLauncher':
    """The launcher of the jobs of a run (``--launcher``)."""
    from ehm_mm.study import SlurmLauncher, TorchrunLauncher
    if args.launcher == 'slurm':
        return SlurmLauncher(args.gpus_per_run, args.nnodes)
    if args.nnodes != 1:
        raise SystemExit('--nnodes > 1 needs --launcher slurm (torchrun runs '
                         'each job on this machine)')
    return TorchrunLauncher(args.gpus_per_run)


def run_chain_command(args: argparse.Namespace, *run: object) -> List[str]:
    """The command that runs the chain of a run: ``(arm, seed, folder)``
    appends the arm and the seed; without them it ends with
    ``--run-chain`` (the slurm script appends them)."""
    return [
        sys.executable,
        osp.abspath(__file__),
        osp.abspath(args.config), '--out',
        osp.abspath(args.out), '--threads',
        str(args.threads), '--launcher', args.launcher, '--gpus-per-run',
        str(args.gpus_per_run), '--nnodes',
        str(args.nnodes)
    ] + (['--quick'] if args.quick else []) + (
        ['--cfg-options', *args.cfg_options] if args.cfg_options else []
    ) + ['--run-chain'] + [str(part) for part in run[:2]]


def run_chain_main(args: argparse.Namespace) -> int:
    """Run the chain of one run (``--run-chain ARM SEED``)."""
    from ehm_mm.study import run_chain
    cfg, arms, _, _, _ = load_study(args.config, args.quick)
    arm, seed = args.run_chain[0], int(args.run_chain[1])
    if arm not in arms:
        raise SystemExit(f'unknown arm {arm!r}; arms: {list(arms)}')
    study = cluster_study(args, cfg)
    folder = osp.abspath(run_dir(args.out, arm, seed))
    os.makedirs(folder, exist_ok=True)
    local = args.launcher == 'torchrun'  # a pid means nothing off this host
    if local:
        with open(osp.join(folder, RUNNING_FILE), 'w') as f:
            f.write(str(os.getpid()))
    run_chain(study.chain(arm, seed, folder), stage_launcher(args),
              log=lambda message: print(message, flush=True))
    if local:
        os.remove(osp.join(folder, RUNNING_FILE))
    return 0


def write_slurm_job(args: argparse.Namespace, study: 'ClusterStudy',
                    todo: List[tuple]) -> str:
    """Write the array script of the pending runs; submit with --submit.

    Args:
        args (argparse.Namespace): The command line.
        study (ClusterStudy): The study.
        todo (list[tuple]): ``(arm, seed)`` of the pending runs.

    Returns:
        str: The script's path.
    """
    from ehm_mm.study import slurm_array_script
    from ehm_mm.study.run_chain import (
        CONFIG_FILE,
        EVAL_FOLDER,
        pretrain_job_args,
        stage_job_args,
    )
    launcher = stage_launcher(args)
    run = osp.join(osp.abspath(args.out), 'runs', '$ARM', 'seed$SEED')
    jobs = [
        launcher.command(
            'tools/train.py',
            pretrain_job_args(osp.join(run, CONFIG_FILE), run))
    ] + [
        launcher.command(
            f'tools/{stage.script}',
            stage_job_args(
                stage, osp.join(run, EVAL_FOLDER, stage.name, CONFIG_FILE),
                '<pretraining checkpoint>',
                osp.join(run, EVAL_FOLDER, stage.name)))
        for stage in study.stages
    ]
    log_dir = osp.join(osp.abspath(args.out), 'slurm')
    os.makedirs(log_dir, exist_ok=True)
    script = osp.join(log_dir, 'study_array.sh')
    with atomic_open(script) as f:
        f.write(
            slurm_array_script(
                todo, run_chain_command(args), osp.dirname(TOOLS_DIR),
                log_dir, args.gpus_per_run, args.nnodes,
                max_parallel=args.jobs, partition=args.partition,
                cpus_per_gpu=args.cpus_per_gpu,
                use_gpus=args.device != 'cpu', sbatch_args=args.sbatch_args,
                stage_commands=[' '.join(job) for job in jobs]))
    print(f'[study] wrote {script}: {len(todo)} array tasks, one per run',
          flush=True)
    if not args.submit:
        print(f'[study] submit it with\n  sbatch {script}\nand, once every '
              'task is done, write the report with the same command and '
              '--report-only', flush=True)
        return script
    try:
        proc = subprocess.run(['sbatch', script], capture_output=True,
                              text=True)
    except FileNotFoundError as e:
        raise SystemExit('--submit needs sbatch (slurm) on this machine; '
                         f'submit {script} where it is') from e
    if proc.returncode:
        raise SystemExit(f'sbatch {script} failed ({proc.returncode}): '
                         f'{proc.stderr.strip()}')
    print(f'[study] {proc.stdout.strip()}; once every task is done, write '
          'the report with the same command and --report-only', flush=True)
    return script


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the study (or one run of it) and write the report."""
    args = parse_args(argv)
    if args.run_one:
        arm, seed, folder = args.run_one
        run_one(args.config, arm, int(seed), folder, args.quick,
                args.threads, args.cfg_options)
        return 0
    if args.run_chain:
        return run_chain_main(args)
    slurm_parallel = args.jobs  # array tasks at a time; None: no limit
    if args.jobs is None:
        args.jobs = 1
    if args.jobs < 1 or args.threads < 1 or args.gpus_per_run < 1:
        raise SystemExit('--jobs, --threads and --gpus-per-run must be >= 1')
    cfg, arms, baseline, quick_arms, contrasts = load_study(
        args.config, args.quick)
    study = None
    if args.launcher != 'local':
        study = cluster_study(args, cfg)
        stage_launcher(args)  # refuses --nnodes with torchrun up front
        if args.baselines:
            raise SystemExit('--baselines measures the CPU study\'s '
                             'baselines in process; use --launcher local')
    elif cfg.get('study_evaluation'):
        raise SystemExit(
            f'{args.config} evaluates each run by a chain of jobs '
            '(study_evaluation): run it with --launcher torchrun (this '
            'machine; --gpus-per-run 1 for one process a job) or --launcher '
            'slurm')
    metrics = [tuple(m) for m in cfg.get('study_metrics', METRICS)]
    prereg = cfg.get('study_preregistration')
    if prereg is not None:  # refused before any training, not after
        prereg = check_preregistration(prereg, contrasts,
                                       [k for k, _ in metrics])
    chosen = args.arms or (quick_arms if args.quick else list(arms))
    unknown = [a for a in chosen if a not in arms]
    if unknown:
        raise SystemExit(f'unknown arms {unknown}; the config has '
                         f'{list(arms)}')
    if args.quick and args.seeds:
        print(f'[study] --quick with --seeds {args.seeds}: running those '
              'seeds', flush=True)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3])
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f'--seeds repeats a seed: {seeds}')
    if baseline not in chosen:
        print(f'[study] note: baseline {baseline!r} is not among the arms; '
              'no paired differences', flush=True)
    os.makedirs(args.out, exist_ok=True)
    failed = []
    if not args.report_only:
        order = sorted(
            ((arm, seed) for seed in seeds for arm in chosen),
            key=lambda item: (item[0] not in args.priority_arms,
                              seeds.index(item[1]), chosen.index(item[0])))
        todo = [(arm, seed) for arm, seed in order
                if not is_running(run_dir(args.out, arm, seed))
                if not osp.exists(
                    osp.join(run_dir(args.out, arm, seed), RESULT_FILE))]
        print(f'[study] {len(todo)} runs to do, '
              f'{len(chosen) * len(seeds) - len(todo)} already finished',
              flush=True)
        if args.launcher == 'slurm' and todo:
            args.jobs = slurm_parallel
            write_slurm_job(args, study, todo)
            return 0
        if args.launcher == 'torchrun':
            from ehm_mm.study import device_slots, visible_gpus
            gpus = [] if args.device == 'cpu' else visible_gpus()
            failed = launch_all(
                args, todo, run_chain_command,
                device_slots(gpus, args.gpus_per_run, args.jobs))
        else:
            failed = launch_all(args, todo)
    if args.baselines:
        compute_baselines(args.config, args.out, baseline, seeds, args.quick,
                          args.cfg_options)
    if study is not None:
        digest, expected_epochs = study.digest, None
    else:
        def digest(arm: str, seed: int) -> str:
            return run_digest(args.config, arm, seed, args.quick,
                              args.cfg_options)

        expected_epochs = expected_validation_epochs(
            build_run_config(args.config, chosen[0], seeds[0], '',
                             args.quick, args.cfg_options))
    report(
        args.out, baseline, chosen, seeds, contrasts, metrics,
        digest=digest,
        missing_metrics=cfg.get('study_missing_metrics'),
        expected_epochs=expected_epochs,
        preregistration=prereg)
    if failed:
        print(f'[study] {len(failed)} runs failed: {failed}', flush=True)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
