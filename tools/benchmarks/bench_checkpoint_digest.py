# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""What the per-tensor sha256 of checkpoints costs at save and at load.

Builds the model of a config (default: EHM-MAE ViT-B/16, student, decoder
and EMA teacher), gives it AdamW moments (one step on zero gradients), and
writes the checkpoint mmengine's runner would write (``meta``,
``state_dict``, ``optimizer``) as ``AtomicCheckpointHook`` does (temporary
file, fsync, rename) into ``--work-dir``, alternately:

* plain: no digests; loaded with ``torch.load(weights_only=True)``;
* with digests: ``add_tensor_digests`` then the same save; loaded with
  ``ehm_mm.utils.load_local_checkpoint`` (which verifies them).

Prints the checkpoint size, the median seconds of each save and load over
``--repeats`` rounds, and the ratios with digests / plain measured in the
same run. Measure on a quiet machine, on the disk checkpoints go to.

Example::

    python tools/benchmarks/bench_checkpoint_digest.py --work-dir /data/tmp
    python tools/benchmarks/bench_checkpoint_digest.py \
        --config tests/data/configs/ehm_mae_tiny_cpu.py --repeats 1
"""
import argparse
import os
import os.path as osp
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu

import ehm_mm  # noqa: F401  (registers the models, the loader)
from ehm_mm.utils import load_local_checkpoint
from ehm_mm.utils.checkpoint_digest import add_tensor_digests, tensor_digests

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Save / load overhead of checkpoint tensor digests.')
    parser.add_argument(
        '--config', default=osp.join(REPO_ROOT, 'configs', 'ehm_mae_vit-b.py'),
        help='config whose model is saved (default: EHM-MAE ViT-B/16)')
    parser.add_argument('--work-dir', default=None,
                        help='folder for the files (default: a temporary '
                        'folder in the system temp dir)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='rounds of each save and load (default 5)')
    return parser.parse_args()


def training_checkpoint(config: str) -> dict:
    """The checkpoint a runner saves for the config's model, with AdamW
    moments.

    Args:
        config (str): Path of the config.

    Returns:
        dict: ``meta``, ``state_dict`` and ``optimizer``.
    """
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    return dict(
        meta=dict(epoch=1, iter=1000, cfg=cfg.pretty_text),
        state_dict=weights_to_cpu(model.state_dict()),
        optimizer=optimizer.state_dict())


def seconds(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    checkpoint = training_checkpoint(args.config)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as folder:
        paths = {kind: osp.join(folder, f'{kind}.pth')
                 for kind in ('plain', 'digests')}
        atomic = dict(backend='ehm_atomic')

        def save_plain() -> None:
            save_checkpoint(checkpoint, paths['plain'], backend_args=atomic)

        def save_with_digests() -> None:
            with_digests = dict(checkpoint)
            add_tensor_digests(with_digests)
            save_checkpoint(with_digests, paths['digests'],
                            backend_args=atomic)

        def load_plain() -> None:
            torch.load(paths['plain'], map_location='cpu', weights_only=True)

        def load_with_digests() -> None:
            load_local_checkpoint(paths['digests'], map_location='cpu')

        save_plain()  # warm up (page cache, allocator)
        save_with_digests()
        # Alternated rounds, so that both see the same machine state.
        runs = dict(save_plain=save_plain, save_digests=save_with_digests,
                    load_plain=load_plain, load_digests=load_with_digests,
                    hash_only=lambda: tensor_digests(checkpoint))
        rounds: Dict[str, List[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                rounds[name].append(seconds(run))
        median = {name: statistics.median(values)
                  for name, values in rounds.items()}
        size = os.path.getsize(paths['plain'])
    tensors = sum(1 for _ in checkpoint['state_dict'].values())
    print(f'config: {osp.relpath(args.config, REPO_ROOT)}')
    print(f'checkpoint: {size / 2**20:.1f} MiB, {tensors} model tensors + '
          f'AdamW moments; {args.repeats} rounds, median seconds')
    for what in ('save', 'load'):
        plain, digests = median[f'{what}_plain'], median[f'{what}_digests']
        print(f'{what}: plain {plain:.3f} s, with digests {digests:.3f} s, '
              f'ratio {digests / plain:.2f}x')
    # Writes to disk vary more between rounds than hashing costs: the
    # hashing alone, against the plain save, is the steadier figure.
    print(f'sha256 of every tensor alone: {median["hash_only"]:.3f} s, '
          f'{median["hash_only"] / median["save_plain"]:.2f}x the plain save')


if __name__ == '__main__':
    main()
