# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Mean attention distance per encoder layer of a pretrained checkpoint.

The paper's Fig. 2(b) analysis: how far (in pixels) each layer's attention
reaches, on the config's validation images. ``masking_study.py`` measures
it for every run; this tool does it for any checkpoint.

Example:
    python tools/analysis/attention_distance.py \\
        configs/ehm_mae_vit-tiny_demo.py work_dirs/demo/epoch_20.pth \\
        --num-images 256 --out distance.json --plot distance.png
"""
import argparse
import json
import os.path as osp
import sys
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
import ehm_mm  # noqa: E402,F401  (registers modules)
from ehm_mm.evaluation.metrics.attention_distance import (  # noqa: E402
    mean_attention_distance,
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='Mean attention distance per layer')
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--num-images', type=int, default=256,
        help='validation images to average over (default 256)')
    parser.add_argument('--out', help='write the distances as JSON')
    parser.add_argument('--plot', help='write a PNG plot')
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings (mmengine syntax)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> list:
    """Measure and print the distances.

    Returns:
        list: The mean distance of every layer, in pixels.
    """
    from mmengine.runner import Runner, load_checkpoint
    from mmpretrain.registry import MODELS

    args = parse_args(argv)
    if args.num_images < 1:
        raise SystemExit('--num-images must be >= 1')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('val_dataloader') is None:
        raise SystemExit(f'{args.config} has no val_dataloader')
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    model = model.to(args.device).eval()
    loader = Runner.build_dataloader(cfg.val_dataloader)
    images, count = [], 0
    for data in loader:
        data = model.data_preprocessor(data, False)
        images.append(data['inputs'])
        count += data['inputs'].shape[0]
        if count >= args.num_images:
            break
    images = torch.cat(images)[:args.num_images].to(args.device)
    encoder = getattr(model, 'backbone', model)
    with torch.no_grad():
        distance = [float(v) for v in mean_attention_distance(encoder, images)]
    for layer, value in enumerate(distance):
        print(f'layer {layer}: {value:.2f} px')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(checkpoint=args.checkpoint, images=len(images),
                           attention_distance=distance), f, indent=1)
    if args.plot:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(range(len(distance)), distance, marker='o')
        ax.set_xlabel('encoder layer')
        ax.set_ylabel('mean attention distance (px)')
        fig.tight_layout()
        fig.savefig(args.plot, dpi=80)
        plt.close(fig)
    return distance


if __name__ == '__main__':
    main()
