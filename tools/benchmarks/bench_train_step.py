# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Training-step throughput of EHM-MAE next to plain MAE.

Builds mmpretrain's ``MAE`` and ``EHMMAE`` from the same config (same
encoder, decoder, batch and device), then times full training steps
(forward, backward, AdamW) of both, alternating, after warm-up. Prints:

* the median step time and images/s of MAE and of EHM-MAE for every
  ``--attn-layers`` setting, and their EHM/MAE ratio (the median over
  rounds of the ratio within a round, robust to load from other
  processes);
* the split of EHM's extra time into every part the EHM step adds: step
  set-up (progress, seeds, host depth draw), EMA teacher update, teacher
  forward (an inference forward, fused attention, of the layers the
  teacher runs: all but the deepest chosen one, then that one's qkv
  projection), the affinity (what the teacher call costs beyond that:
  attention weights, head mean, sum, symmetrisation), hierarchy, masks,
  the logged values, ``teacher_distance`` amortised over the
  ``--log-interval`` (the step computes it on the logger's iterations
  only) and the student's difference (an EHM step with given masks minus
  MAE's step); what remains of the measured difference is timing noise,
  each also as a share of the MAE step;
* the teacher call against a fused inference forward of the same layers;
* the peak memory of each model, every model in its own process: on CPU
  the growth of the peak RSS (``VmHWM``, reset after the imports) from
  before building the model to after the steps (weights, EMA teacher,
  gradients, optimizer state, activations); on CUDA
  ``torch.cuda.max_memory_allocated``.

Measurement lives in ``train_step_measure.py`` (:func:`run` returns every
figure); this script parses the command line and prints the report.

On CUDA the steps run under bf16 autocast (as a bf16 ``AmpOptimWrapper``),
on CPU in float32. ``--smoke`` runs a tiny ViT in seconds (for tests).

Example::

    python tools/benchmarks/bench_train_step.py                # ViT-B, CPU
    python tools/benchmarks/bench_train_step.py --attn-layers 2 4 8 all
    python tools/benchmarks/bench_train_step.py --device cuda --batch-size 64
    python tools/benchmarks/bench_train_step.py --smoke
"""
import argparse
import json
import math
import os
import sys
from typing import List, Optional

import torch
from mmengine.logging import MMLogger

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_measure import (  # noqa: E402
    DEFAULT_CONFIG,
    EHM_ONLY_KEYS,
    attn_setting,
    memory_child,
    model_configs,
    run,
)

__all__ = ['EHM_ONLY_KEYS', 'attn_setting', 'model_configs', 'parse_args',
           'report', 'run', 'main']


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (List[str], optional): Arguments; None reads ``sys.argv``.
            Defaults to None.

    Returns:
        argparse.Namespace: The options.
    """
    parser = argparse.ArgumentParser(
        description='Time EHM-MAE and MAE training steps side by side.')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='EHM-MAE config; MAE is built from the same '
                        'model dict (default configs/ehm_mae_vit-b.py)')
    parser.add_argument('--arch', default=None,
                        help="ViT arch of mmpretrain ('b', 'l', 'h', ...); "
                        'default: the config\'s')
    parser.add_argument('--img-size', type=int, default=224,
                        help='image side in pixels (default 224)')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='images per step (default 4 on CPU, 64 on '
                        'CUDA)')
    parser.add_argument('--attn-layers', nargs='+', default=None,
                        help='EHM settings to time: K = affinity from the '
                        'first K encoder layers, "all" = every layer '
                        '(default: 4 all; 1 all with --smoke)')
    parser.add_argument('--teacher', choices=('ema', 'online'),
                        default=None, help="EHM teacher (default: the "
                        "config's)")
    parser.add_argument('--steps', type=int, default=5,
                        help='timed steps per model (default 5)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed steps per model first (default 1)')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed calls per EHM component (default 3)')
    parser.add_argument('--progress', type=float, default=0.5,
                        help='training progress the masks are drawn at '
                        '(default 0.5)')
    parser.add_argument('--log-interval', type=int, default=100,
                        help='LoggerHook interval of the simulated run: '
                        'the step computes teacher_distance on every '
                        'such iteration only (default 100, mmpretrain\'s)')
    parser.add_argument('--device', default=None,
                        help='cpu / cuda (default: cuda when available)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--no-memory', action='store_true',
                        help='skip the peak-memory processes')
    parser.add_argument('--json', default=None,
                        help='also write every figure to this JSON file')
    parser.add_argument('--smoke', action='store_true',
                        help='tiny ViT (32 px, 2 layers), batch 2, 1 step: '
                        'checks that everything runs, in seconds')
    parser.add_argument('--memory-child', default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.img_size = 32
        args.batch_size = args.batch_size or 2
        args.steps, args.warmup, args.repeats = 1, 1, 1
    if args.attn_layers is None:
        args.attn_layers = ['1', 'all'] if args.smoke else ['4', 'all']
    for name in ('steps', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1')
    if args.warmup < 0:
        parser.error('--warmup must be >= 0')
    if args.log_interval < 1:
        parser.error('--log-interval must be >= 1')
    if not 0 <= args.progress <= 1:
        parser.error('--progress must be in [0, 1]')
    for value in args.attn_layers:
        if value != 'all' and not (value.isdigit() and int(value) > 0):
            parser.error('--attn-layers takes positive ints or "all", got '
                         f'{value!r}')
    return args



def report(res: dict) -> str:
    """Format the results as the printed report.

    Args:
        res (dict): What :func:`run` returns.

    Returns:
        str: The report.
    """
    batch = res['batch_size']
    mae_t = res['step_time']['mae']
    h, w = res['grid']
    arch = res['arch'] if isinstance(res['arch'], str) else 'custom'
    lines = [
        f"device: {res['device']} ({res['device_name']}), torch "
        f"{res['torch']}, {res['threads']} CPU threads, {res['precision']}",
        f"model: ViT-{arch} ({res['num_layers']} layers), "
        f"{res['img_size']} px, {h}x{w} patches, batch {batch}, "
        f"teacher {res['teacher']}, masks at progress {res['progress']:g} "
        f"(depth {res['mask_depth']:.2f})",
        f"step time (median of {res['steps']}, after {res['warmup']} "
        'warm-up, models alternating, order rotated every round; '
        'ratio: median of the per-round ratios):',
        f"  MAE                          : {mae_t * 1e3:9.1f} ms  "
        f"{batch / mae_t:8.2f} images/s",
    ]
    for value in res['settings']:
        t = res['step_time'][value]
        name = res['setting_names'][value]
        lines.append(f'  EHM-MAE attn_layers {name:9}: {t * 1e3:9.1f} ms  '
                     f'{batch / t:8.2f} images/s  EHM/MAE ratio '
                     f"{res['ratio'][value]:.3f}")
    for value in res['settings']:
        comp = res['components'][value]
        extra = (res['ratio'][value] - 1) * mae_t
        affinity = comp['teacher_call'] - comp['teacher_network']
        every = res['log_interval']
        parts = [('step set-up (seeds, depths)', comp['step_setup']),
                 ('EMA teacher update', comp['ema_update']),
                 ('teacher forward (fused)', comp['teacher_network']),
                 ('affinity', affinity),
                 ('hierarchy', comp['hierarchy']),
                 ('masks', comp['masks']),
                 ('logged values', comp['log_vars']),
                 (f'teacher distance (1/{every} it)',
                  comp['teacher_distance'] / every),
                 ('student with given masks', comp['student'])]
        noise = extra - sum(t for _, t in parts)
        parts.append(('timing noise (extra - parts)', noise))
        lines.append(
            f"EHM extra time, attn_layers {res['setting_names'][value]}: "
            f'{extra * 1e3:.1f} ms per step ({100 * extra / mae_t:.1f}% of '
            'the MAE step)')
        for label, t in parts:
            lines.append(f'  {label:28}: {t * 1e3:9.1f} ms  '
                         f'{100 * t / mae_t:6.2f}% of MAE step')
        lines.append(f"  (teacher distance when computed: "
                     f"{comp['teacher_distance'] * 1e3:.1f} ms)")
        lines.append(
            f"  hierarchy + masks           : "
            f"{100 * (comp['hierarchy'] + comp['masks']) / mae_t:6.2f}% "
            'of MAE step (target < 3%)')
        lines.append(
            f"  teacher call / fused inference forward of the same layers: "
            f"{comp['teacher_call'] / comp['fused_forward']:.3f} "
            '(target <= 1.10)')
    if res['memory']:
        mem = res['memory']
        lines.append(f"peak memory ({mem['mae']['how']}, each model in its "
                     'own process):')
        lines.append(f"  MAE                          : "
                     f"{mem['mae']['peak_mib']:9.1f} MiB")
        for value in res['settings']:
            peak = mem[value]['peak_mib']
            base = mem['mae']['peak_mib']
            ratio = f'{peak / base:.3f}' if base > 0 else 'n/a'
            lines.append(
                f"  EHM-MAE attn_layers {res['setting_names'][value]:9}: "
                f'{peak:9.1f} MiB  EHM/MAE ratio {ratio} (target <= 1.10)')
    return '\n'.join(lines)



def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    # quiet: no per-parameter init report from mmengine
    MMLogger.get_instance('bench_train_step', log_level='WARNING')
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.device = args.device or ('cuda'
                                  if torch.cuda.is_available() else 'cpu')
    if args.batch_size is None:
        args.batch_size = 64 if args.device.startswith('cuda') else 4
    if args.batch_size < 1:
        raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
    if args.memory_child is not None:
        memory_child(args)
        return
    res = run(args)
    print(report(res))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2, default=str)
    if not all(math.isfinite(t) for t in res['step_time'].values()):
        raise RuntimeError('a step time is not finite')


if __name__ == '__main__':
    main()
