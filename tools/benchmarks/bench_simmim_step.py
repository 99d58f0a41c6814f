# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Training-step time of EHM-SimMIM next to SimMIM, same device and run.

Builds the models of the shipped configs (SimMIM Swin-B w6 at 192 px with
pipeline masks; ``EHMSimMIM`` from
``configs/simmim/ehm-simmim_swin-base-w6_*.py``: EMA teacher, features
affinity, hierarchy and masks in the step) and times full training steps
(forward, backward, AdamW) on random images, alternating the two models
every round; prints the median seconds per step of each and the median of
the per-round EHM/SimMIM ratios (robust to load from other processes).

Example::

    python tools/benchmarks/bench_simmim_step.py --threads 1 --batch 2
    python tools/benchmarks/bench_simmim_step.py --device cuda --batch 128
"""
import argparse
import os.path as osp
import statistics
import time

import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS, TRANSFORMS
from mmpretrain.structures import DataSample

import ehm_mm  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
EHM = osp.join(REPO, 'configs', 'simmim',
               'ehm-simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py')
PIX = osp.join(
    REPO, 'configs', 'simmim',
    'simmim_swin-base-w6_ehm-pix_8xb256-amp-coslr-100e_in1k-192px.py')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='EHM-SimMIM vs SimMIM training-step time.')
    parser.add_argument('--batch', type=int, default=2, help='images/step')
    parser.add_argument('--rounds', type=int, default=3,
                        help='timed steps per model (default 3)')
    parser.add_argument('--device', default=None,
                        help='cpu / cuda (default: cuda when available)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    return parser.parse_args()


def step_fn(model, images, samples, device):
    optim = build_optim_wrapper(
        model, dict(type='OptimWrapper',
                    optimizer=dict(type='AdamW', lr=1e-4)))

    def step() -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        losses = model(images, samples, mode='loss')
        optim.update_params(losses['loss'])
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return step


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    hub = MessageHub.get_instance('bench_simmim_step')
    hub.update_info('iter', 500)
    hub.update_info('max_iters', 1000)  # d(1/2) = 1.5
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, 192, 192, device=device)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pix = Config.fromfile(PIX)
        simmim = MODELS.build(pix.model).to(device)
        ehm = MODELS.build(Config.fromfile(EHM).model).to(device)
        generator = TRANSFORMS.build(
            dict(type='SimMIMMaskGenerator', input_size=192,
                 mask_patch_size=32, model_patch_size=4, mask_ratio=0.6))
    samples = [
        DataSample().set_mask(torch.as_tensor(generator({})['mask'],
                                              device=device))
        for _ in range(args.batch)
    ]
    simmim.init_weights()
    ehm.init_weights()
    steps = dict(SimMIM=step_fn(simmim.train(), images, samples, device),
                 EHMSimMIM=step_fn(ehm.train(), images, samples, device))
    for step in steps.values():  # warm-up
        step()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(step())
    ratios = [e / s for e, s in zip(times['EHMSimMIM'], times['SimMIM'])]
    print(f'device {device}, Swin-B w6 192 px, batch {args.batch}, '
          f'{torch.get_num_threads()} threads, {args.rounds} rounds')
    for name, values in times.items():
        print(f'{name:<10} {statistics.median(values):8.3f} s/step')
    print('EHM/SimMIM per round: ' + ' '.join(f'{r:.2f}' for r in ratios))
    print(f'EHM/SimMIM step-time ratio (median of rounds): '
          f'{statistics.median(ratios):.2f}')


if __name__ == '__main__':
    main()
