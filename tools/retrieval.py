# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Image retrieval benchmarks of a pretrained (EHM / MAE) encoder.

Loads the encoder of CHECKPOINT (the student ``backbone.*`` weights by
default, the EMA teacher ``teacher.module.*`` with ``--weights teacher``, or
a plain encoder state dict) with exact key accounting, runs each benchmark of
CONFIG through mmengine's test loop and prints one table per dataset, then a
summary.

A config either lists benchmark names in ``retrieval_benchmarks`` (benchmark
``N`` runs ``N_test_dataloader`` with ``N_test_evaluator``) or is a
single-benchmark config with ``test_dataloader`` / ``test_evaluator``.

Examples:
    python tools/retrieval.py \\
        configs/benchmarks/retrieval/vit-base-p16_retrieval-all.py ehm.pth
    python tools/retrieval.py CONFIG ehm.pth --weights teacher \\
        --benchmarks roxford5k copydays --out results.json
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence

from mmengine.config import Config, ConfigDict
from mmengine.dist import get_rank
from mmengine.model import is_model_wrapper
from mmengine.runner import CheckpointLoader, Runner

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
import ehm_mm.retrieval  # noqa: E402,F401  (registers the benchmarks)
from ehm_mm.downstream import (  # noqa: E402
    ENCODER_PREFIXES,
    load_encoder_weights,
)
from ehm_mm.retrieval.metrics import format_table  # noqa: E402
from ehm_mm.utils import launch  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (Sequence[str], optional): Arguments; None reads ``sys.argv``.
            Defaults to None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = launch.tool_parser(
        'Image retrieval benchmarks of a pretrained encoder',
        'retrieval config file', 'folder of the evaluation logs')
    parser.add_argument('checkpoint', help='EHM / MAE checkpoint or encoder')
    parser.add_argument(
        '--weights',
        choices=sorted(ENCODER_PREFIXES),
        default='student',
        help='encoder copy to evaluate: student (backbone.*) or teacher '
        '(teacher.module.*, the EMA encoder of EHM)')
    parser.add_argument(
        '--benchmarks',
        nargs='+',
        help='names of the benchmarks to run (default: all in the config)')
    parser.add_argument('--out', help='write all metrics to this JSON file')
    return launch.parse_tool_args(parser, argv)


def collect_benchmarks(cfg: Config,
                       names: Optional[Sequence[str]] = None
                       ) -> List[ConfigDict]:
    """The benchmarks of a config, optionally filtered by name.

    A config lists benchmark names in ``retrieval_benchmarks``; benchmark
    ``N`` runs ``N_test_dataloader`` with ``N_test_evaluator``. A config
    without that list is one benchmark (``test_dataloader`` /
    ``test_evaluator``) named after its evaluator prefix.

    Args:
        cfg (Config): The retrieval config.
        names (Sequence[str], optional): Names to keep, in the config's
            order. None keeps all. Defaults to None.

    Returns:
        list[ConfigDict]: Dicts with ``name``, ``test_dataloader`` and
        ``test_evaluator``.
    """
    listed = cfg.get('retrieval_benchmarks')
    benchmarks = []
    if listed is None:
        if cfg.get('test_dataloader') is None or cfg.get(
                'test_evaluator') is None:
            raise ValueError('the config has neither retrieval_benchmarks '
                             'nor test_dataloader + test_evaluator')
        name = cfg.test_evaluator.get('prefix') or \
            cfg.test_dataloader.dataset.type
        benchmarks.append(
            ConfigDict(
                name=name,
                test_dataloader=cfg.test_dataloader,
                test_evaluator=cfg.test_evaluator))
    else:
        if isinstance(listed, str):
            raise TypeError('retrieval_benchmarks must be a list of names, '
                            f'got {listed!r}')
        for name in listed:
            keys = [f'{name}_test_dataloader', f'{name}_test_evaluator']
            missing = [k for k in keys if cfg.get(k) is None]
            if missing:
                raise ValueError(f'benchmark {name!r} of retrieval_benchmarks'
                                 f' needs {missing} in the config')
            benchmarks.append(
                ConfigDict(
                    name=name,
                    test_dataloader=cfg[keys[0]],
                    test_evaluator=cfg[keys[1]]))
    if names is None:
        return benchmarks
    known = [b['name'] for b in benchmarks]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f'unknown benchmarks {unknown}; the config has '
                         f'{known}')
    return [b for b in benchmarks if b['name'] in names]


def benchmark_config(cfg: Config, bench: ConfigDict,
                     timestamp: str) -> Config:
    """A runnable single-benchmark copy of the config.

    Args:
        cfg (Config): The retrieval config.
        bench (ConfigDict): One entry of :func:`collect_benchmarks`.
        timestamp (str): Shared by the runs of one invocation.

    Returns:
        Config: The config of that benchmark's runner.
    """
    run_cfg = copy.deepcopy(cfg)
    run_cfg.pop('retrieval_benchmarks', None)
    run_cfg.test_dataloader = bench['test_dataloader']
    run_cfg.test_evaluator = bench['test_evaluator']
    run_cfg.setdefault('test_cfg', dict(type='TestLoop'))
    run_cfg.load_from = None
    run_cfg.experiment_name = f'{bench["name"]}_{timestamp}'
    return run_cfg


def run_benchmarks(cfg: Config, checkpoint: str, weights: str = 'student',
                   names: Optional[Sequence[str]] = None
                   ) -> Dict[str, Dict[str, float]]:
    """Evaluate an encoder on every benchmark of a config.

    Args:
        cfg (Config): The retrieval config (work_dir and launcher set).
        checkpoint (str): Path or URL of the checkpoint.
        weights (str): ``'student'`` or ``'teacher'``. Defaults to
            ``'student'``.
        names (Sequence[str], optional): Benchmarks to run. Defaults to
            None (all).

    Returns:
        dict[str, dict[str, float]]: Metrics per benchmark name.
    """
    benchmarks = collect_benchmarks(cfg, names)
    loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    timestamp = time.strftime('%Y%m%d_%H%M%S', time.localtime())
    results = {}
    for bench in benchmarks:
        runner = Runner.from_cfg(benchmark_config(cfg, bench, timestamp))
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if not hasattr(model, 'backbone'):
            raise TypeError(f'{type(model).__name__} has no backbone to load '
                            'the encoder into; use RetrievalFeatureExtractor')
        load_encoder_weights(model.backbone, loaded, weights)
        runner.logger.info(f'{bench["name"]}: {weights} encoder weights of '
                           f'{checkpoint} loaded')
        results[bench['name']] = {
            k: float(v)
            for k, v in runner.test().items()
        }
    return results


def summary_table(results: Dict[str, Dict[str, float]]) -> str:
    """One row per benchmark metric, for the final printout.

    Args:
        results (dict): Metrics per benchmark.

    Returns:
        str: The table.
    """
    rows = [[name, key.split('/', 1)[-1], value]
            for name, metrics in results.items()
            for key, value in metrics.items()]
    header = ['Benchmark', 'Metric', 'Value']
    return format_table('Retrieval summary', header, rows)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """Run the tool.

    Args:
        argv (Sequence[str], optional): Command-line arguments; None reads
            ``sys.argv``. Defaults to None.

    Returns:
        dict[str, dict[str, float]]: Metrics per benchmark.
    """
    args = parse_args(argv)
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    launch.set_default_work_dir(cfg, args.config, args.work_dir)
    launch.use_gloo_without_cuda(cfg, args.launcher)
    launch.check_benchmark_overrides(cfg, args.cfg_options)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    own_group = launch.init_cpu_process_group(cfg, args.launcher)
    results = run_benchmarks(cfg, args.checkpoint, args.weights,
                             args.benchmarks)
    rank = get_rank()
    if own_group:
        launch.leave_process_group()
    if rank == 0:
        print(summary_table(results), flush=True)
        if args.out is not None:
            os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
            with open(args.out, 'w') as f:
                json.dump(results, f, indent=2)
    return results


if __name__ == '__main__':
    main()
