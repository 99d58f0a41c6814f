# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Throughput and operator launches of EHM hierarchy + mask generation.

Prints, for a batch of patch affinities (B = 256, N = 14 x 14 by default),
masks cut at depth ``d`` (``--depth``, stochastically rounded per image):

* operator launches per call (``torch.profiler`` count of top-level aten
  operators, each about one kernel launch on a GPU; all aten events in
  brackets) of ``build_hierarchy`` with the levels the masks use (static
  shapes, the accelerator path), of the whole tree, and of the masking
  module's forward;
* images/s of ``EvolvedHierarchicalMasking`` (tree + masks) and of the tree
  alone, and of mmpretrain's ``MAEViT.random_masking`` in the same run;
* with ``--compile``, the same for ``hierarchy_cfg.compile=True``;
* with ``--hierarchy-cfg KEY=VALUE ...``, images/s of the masking module
  with those options next to the default one, timed alternately in the
  same run, and their ratio;
* images/s of the teacher affinity (``attention_affinity`` of a ViT-B/16,
  all 12 layers) and the seconds of one mmpretrain MAE ViT-B/16 training
  step (forward, backward, AdamW), and the fraction of it the masking costs.

The affinities are cosine similarities of a spatially smoothed random
feature map, a stand-in with the local coherence of attention maps.

Example::

    python tools/benchmarks/bench_masking.py --threads 1
    python tools/benchmarks/bench_masking.py --threads 1 --skip-vit \
        --hierarchy-cfg affinity_norm=degree
    python tools/benchmarks/bench_masking.py --device cuda --step-batch 64
"""
import argparse
import ast
import math
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models import MAEViT
from mmpretrain.registry import MODELS
from torch.profiler import ProfilerActivity, profile

import ehm_mm  # noqa: F401  (registers EvolvedHierarchicalMasking)
from ehm_mm.models.masking import attention_affinity, build_hierarchy


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Benchmark EHM hierarchy + mask generation.')
    parser.add_argument('--batch-size', type=int, default=256,
                        help='images per masking call (default 256)')
    parser.add_argument('--grid', type=int, nargs=2, default=(14, 14),
                        metavar=('H', 'W'),
                        help='patch grid (default 14 14, N = 196)')
    parser.add_argument('--device', default=None,
                        help='cpu / cuda (default: cuda when available)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed calls per measurement (default 5)')
    parser.add_argument('--depth', type=float, default=2.5,
                        help='continuous masking depth d (default 2.5)')
    parser.add_argument('--compile', action='store_true',
                        help='also time hierarchy_cfg.compile=True '
                        '(torch.compile of every tree level)')
    parser.add_argument('--step-batch', type=int, default=None,
                        help='batch of the ViT-B MAE step (default 8 on '
                        'CPU, 128 on accelerators)')
    parser.add_argument('--step-repeats', type=int, default=2,
                        help='timed MAE training steps (default 2)')
    parser.add_argument('--depth-unit', default='level',
                        choices=['level', 'node_size'],
                        help='EvolvedHierarchicalMasking.depth_unit (default '
                        'level)')
    parser.add_argument('--boundary', default='random',
                        choices=['random', 'subtree'],
                        help='EvolvedHierarchicalMasking.boundary (default '
                        'random)')
    parser.add_argument('--skip-vit', action='store_true',
                        help='skip the ViT-B teacher and MAE step timings')
    parser.add_argument('--hierarchy-cfg', nargs='+', default=None,
                        metavar='KEY=VALUE',
                        help='also time the masking module with these '
                        'hierarchy_cfg options (e.g. affinity_norm=degree '
                        'tie_jitter=1e-6) against the default, alternately')
    args = parser.parse_args()
    args.hierarchy_cfg = parse_options(parser, args.hierarchy_cfg)
    return args


def parse_options(parser: argparse.ArgumentParser,
                  items: Tuple[str, ...]) -> Dict[str, object]:
    """``KEY=VALUE`` strings to a dict; values are Python literals or str."""
    options = {}
    for item in items or ():
        key, sep, text = item.partition('=')
        if not sep or not key:
            parser.error(f'--hierarchy-cfg takes KEY=VALUE, got {item!r}')
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def smooth_affinity(batch: int, h: int, w: int,
                    device: torch.device) -> torch.Tensor:
    """Cosine similarities of a smoothed random feature map ``[B, N, N]``."""
    gen = torch.Generator(device='cpu').manual_seed(0)
    feat = torch.randn(batch, 32, h, w, generator=gen)
    for _ in range(2):
        feat = F.avg_pool2d(feat, 5, 1, 2, count_include_pad=False)
    feat = F.normalize(feat.flatten(2).transpose(1, 2), dim=-1).to(device)
    return feat @ feat.transpose(1, 2)


def call_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call, the device synchronised before and after."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def median(times: List[float]) -> float:
    """The median of an odd count; the upper of the middle two otherwise."""
    return sorted(times)[len(times) // 2]


def timed(fn: Callable[[], object], repeats: int,
          device: torch.device) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    return median([call_seconds(fn, device) for _ in range(repeats)])


def timed_pair(first: Callable[[], object], second: Callable[[], object],
               repeats: int, device: torch.device) -> Tuple[float, float]:
    """Median seconds of two calls timed alternately (after a warm-up).

    Alternating spreads a changing machine load over both.
    """
    first(), second()
    times = ([], [])
    for _ in range(repeats):
        for fn, out in zip((first, second), times):
            out.append(call_seconds(fn, device))
    return median(times[0]), median(times[1])


def operator_launches(fn: Callable[[], object]) -> Tuple[int, int]:
    """aten operators one call runs: ``(top-level, all)``.

    Top-level operators are those not called from inside another aten
    operator, about one kernel launch each on a GPU (a CPU-measurable proxy
    of the launch overhead).

    Args:
        fn (Callable): The call, already warmed up.

    Returns:
        Tuple[int, int]: The top-level and the total aten event counts.
    """
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith('aten::')]
    top = [
        e for e in events if e.cpu_parent is None
        or not e.cpu_parent.name.startswith('aten::')
    ]
    return len(top), len(events)


def mae_vit_b_step(batch: int, repeats: int, device: torch.device) -> float:
    """Seconds of one mmpretrain MAE ViT-B/16 training step."""
    model = MODELS.build(
        dict(
            type='MAE',
            backbone=dict(type='MAEViT', arch='b', patch_size=16,
                          mask_ratio=0.75),
            neck=dict(type='MAEPretrainDecoder', patch_size=16, in_chans=3,
                      embed_dim=768, decoder_embed_dim=512, decoder_depth=8,
                      decoder_num_heads=16, mlp_ratio=4.),
            head=dict(type='MAEPretrainHead', norm_pix=True, patch_size=16,
                      loss=dict(type='PixelReconstructionLoss',
                                criterion='L2')))).to(device)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, 224, 224, device=device)

    def step() -> None:
        loss = model.loss(images, [])['loss']
        optim.zero_grad()
        loss.backward()
        optim.step()

    return timed(step, repeats, device)


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    h, w = args.grid
    batch, num = args.batch_size, h * w
    print(f'device: {device}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} CPU threads')
    affinity = smooth_affinity(batch, h, w, device)

    def masking(**hierarchy_cfg):
        return MODELS.build(
            dict(type='EvolvedHierarchicalMasking', grid_size=(h, w),
                 mask_ratio=0.75, d_min=args.depth, d_max=args.depth,
                 schedule='constant', depth_unit=args.depth_unit,
                 boundary=args.boundary, hierarchy_cfg=hierarchy_cfg))

    static = masking(compact=False)
    levels = math.ceil(args.depth)
    if args.depth_unit == 'node_size':  # levels the module builds
        levels = math.ceil(static.spec.levels_per_octave * levels)
    calls = {
        'tree, static, levels used':
        lambda: build_hierarchy(
            affinity, (h, w), num_levels=levels, compact=False),
        'whole tree, static (all levels)':
        lambda: build_hierarchy(affinity, (h, w), compact=False),
        'tree + masks, static (module)':
        lambda: static(affinity, progress=0.5),
    }
    print(f'B = {batch}, grid {h}x{w} (N = {num}), depth d = {args.depth} '
          f'({levels} levels used), depth_unit={args.depth_unit}, '
          f'boundary={args.boundary}')
    print('operator launches per call (top-level aten ops [all aten ops]):')
    for name, call in calls.items():
        call()
        top, total = operator_launches(call)
        print(f'  {name:32}: {top:6d} [{total}]')
    tree = build_hierarchy(affinity, (h, w))
    counts = tree.num_nodes.float().mean(0).tolist()
    print('mean node count per level: ' +
          ' '.join(f'{c:.1f}' for c in counts))

    default = masking()
    sizes = default(affinity, progress=0.5).node_size
    print(f'mean masked-node size: {float(sizes.mean()):.2f} patches')
    t_ehm = timed(lambda: default(affinity, progress=0.5), args.repeats,
                  device)
    t_tree = timed(
        lambda: build_hierarchy(affinity, (h, w), num_levels=levels),
        args.repeats, device)
    t_static = timed(calls['tree + masks, static (module)'], args.repeats,
                     device)
    mae_tokens = torch.randn(batch, num, 768, device=device)
    t_random = timed(lambda: MAEViT.random_masking(None, mae_tokens, 0.75),
                     args.repeats, device)
    print(f'EHM hierarchy + masks : {batch / t_ehm:10.0f} images/s '
          f'({t_ehm * 1e3:.1f} ms per batch; tree alone '
          f'{t_tree * 1e3:.1f} ms; static shapes {t_static * 1e3:.1f} ms)')
    if args.compile:
        compiled = masking(compact=False, compile=True)
        start = time.perf_counter()
        compiled(affinity, progress=0.5)
        first = time.perf_counter() - start
        t_comp = timed(lambda: compiled(affinity, progress=0.5),
                       args.repeats, device)
        top, total = operator_launches(lambda: compiled(affinity,
                                                        progress=0.5))
        print(f'  compiled            : {batch / t_comp:10.0f} images/s '
              f'({t_comp * 1e3:.1f} ms per batch; first call '
              f'{first:.1f} s; {top} [{total}] aten ops per call)')
    if args.hierarchy_cfg:
        option = masking(**args.hierarchy_cfg)
        t_base, t_opt = timed_pair(
            lambda: default(affinity, progress=0.5),
            lambda: option(affinity, progress=0.5), args.repeats, device)
        print(f'  hierarchy_cfg={args.hierarchy_cfg}: '
              f'{batch / t_opt:.0f} images/s vs {batch / t_base:.0f} '
              f'default, ratio {t_base / t_opt:.3f} (alternate timing)')
    print(f'MAE random_masking    : {batch / t_random:10.0f} images/s '
          f'({t_random * 1e3:.1f} ms per batch, with the token gather)')
    if args.skip_vit:
        return

    vit = MAEViT(arch='b', patch_size=16).to(device)
    vit.eval()  # mmpretrain backbones' train() returns None
    aff_batch = min(batch, 16 if device.type == 'cpu' else batch)
    images = torch.randn(aff_batch, 3, 224, 224, device=device)
    t_aff = timed(lambda: attention_affinity(vit, images), 1, device)
    print(f'teacher affinity      : {aff_batch / t_aff:10.1f} images/s '
          f'(ViT-B/16, 12 layers, B = {aff_batch})')
    step_batch = args.step_batch or (8 if device.type == 'cpu' else 128)
    t_step = mae_vit_b_step(step_batch, args.step_repeats, device)
    per_image = t_step / step_batch
    print(f'MAE ViT-B step        : {step_batch / t_step:10.1f} images/s '
          f'({t_step:.2f} s per step of {step_batch} images)')
    print(f'EHM masks cost {100 * (t_ehm / batch) / per_image:.2f}% of a '
          f'ViT-B MAE step per image; the teacher affinity '
          f'{100 * (t_aff / aff_batch) / per_image:.1f}%')


if __name__ == '__main__':
    main()
