# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Per-GPU memory of FSDP2-sharded EHM-MAE pretraining, computed.

Counts the parameters of each config's model (built on the ``meta``
device: no memory, no weights) and prints, as the Markdown tables of
``docs/en/fsdp.md``, what one GPU holds at 8 / 16 / 32 ranks:

* sharded state, divided by the number of ranks: the student's float32
  parameters (4 bytes each), its float32 gradients (4 bytes per trainable
  parameter), AdamW's ``exp_avg`` and ``exp_avg_sq`` (8 bytes per
  trainable parameter) and the EMA teacher's float32 encoder (4 bytes);
* the gathered working set, not divided: bf16 copies of the root group
  (embeddings, norms, the decoder's projections, the teacher's embeddings)
  and of two blocks (the running one and the prefetched next), and the
  bf16 gradients of two blocks before their reduce-scatter;
* activations of the config's per-GPU batch, from the per-layer estimate
  of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
  Transformer Models"): ``34 * s * h`` bytes per image for a layer of
  ``s`` tokens and width ``h`` with 16-bit activations and a fused
  attention kernel that keeps no ``s x s`` matrix; the encoder sees the
  visible tokens (``1 + N / 4`` at mask ratio 0.75), the decoder all
  ``1 + N``. With activation checkpointing a block keeps only its bf16
  input (``2 * s * h`` bytes), and one block's activations are rebuilt at
  a time in the backward.

Example:
    python tools/analysis/fsdp_memory.py \\
        configs/ehm_mae_vit-l_fsdp.py configs/ehm_mae_vit-h_fsdp.py
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
from mmpretrain.registry import MODELS  # noqa: E402

import ehm_mm  # noqa: E402,F401  (registers modules)

GIB = 2**30
RANKS = (8, 16, 32)
# Bytes per element of each kind of state.
FP32, BF16, ADAMW = 4, 2, 8
# Korthikanti et al. 2022: bytes per token and channel of one layer.
ACT_PER_TOKEN_CHANNEL = 34


def _count(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters()
               if p.requires_grad or not trainable)


def model_sizes(config: str) -> Dict[str, float]:
    """Parameter counts and shapes of a config's EHM-MAE.

    Args:
        config (str): Path of an EHM-MAE config.

    Returns:
        Dict[str, float]: ``student`` (encoder + decoder), ``trainable``,
        ``teacher`` (encoder), ``root`` (parameters outside the blocks,
        teacher's included), ``block`` (the largest block), ``batch``
        (images per GPU) and the activation bytes per image, ``act`` and
        ``act_ckpt``, and ``act_block`` (one block's).
    """
    cfg = Config.fromfile(config)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    encoder, decoder = model.backbone, model.neck
    if not hasattr(decoder, 'decoder_blocks'):
        raise ValueError(
            f'{config}: fsdp_memory.py models EHM-MAE (a ViT encoder and '
            f'MAE\'s transformer decoder); this config builds '
            f'{type(model).__name__} with a {type(decoder).__name__} neck, '
            'which it does not model')
    blocks = [*encoder.layers, *decoder.decoder_blocks]
    block_sizes = [_count(b) for b in blocks]
    student = _count(encoder) + _count(decoder)
    teacher = _count(model.teacher.module) if model.teacher else 0
    in_blocks = sum(block_sizes)
    teacher_blocks = (sum(_count(b) for b in model.teacher.module.layers)
                      if model.teacher else 0)
    num_patches = encoder.num_patches
    visible = round(num_patches * (1 - model.masking.mask_ratio))
    layers = [(len(encoder.layers), 1 + visible, encoder.embed_dims),
              (len(decoder.decoder_blocks), 1 + num_patches,
               decoder.decoder_embed.out_features)]
    per_layer = [ACT_PER_TOKEN_CHANNEL * s * h for _, s, h in layers]
    return dict(
        student=student,
        trainable=_count(model, trainable=True),
        teacher=teacher,
        root=student - in_blocks + teacher - teacher_blocks,
        block=max(block_sizes),
        batch=cfg.train_dataloader.batch_size,
        act=sum(n * a for (n, _, _), a in zip(layers, per_layer)),
        act_ckpt=sum(n * BF16 * s * h for n, s, h in layers),
        act_block=max(per_layer))


def memory_rows(sizes: Dict[str, float],
                ranks: Sequence[int] = RANKS) -> List[List[str]]:
    """The GiB per GPU of each state at each number of ranks.

    Args:
        sizes (Dict[str, float]): :func:`model_sizes`.
        ranks (Sequence[int]): Numbers of ranks. Defaults to (8, 16, 32).

    Returns:
        List[List[str]]: Rows ``[what, bytes, GiB under DDP (nothing
        sharded, no gathering), GiB at each rank count]``.
    """
    sharded = [
        ('student parameters (fp32)', FP32 * sizes['student'], '4 x P'),
        ('student gradients (fp32)', FP32 * sizes['trainable'], '4 x T'),
        ('AdamW state (fp32)', ADAMW * sizes['trainable'], '8 x T'),
        ('EMA teacher (fp32)', FP32 * sizes['teacher'], '4 x E'),
    ]
    gathered = BF16 * (sizes['root'] + 2 * sizes['block']) + \
        BF16 * 2 * sizes['block']
    batch = sizes['batch']
    act = batch * sizes['act']
    act_ckpt = batch * (sizes['act_ckpt'] + sizes['act_block'])
    rows = []
    for name, total, formula in sharded:
        rows.append([name, f'{formula} / N', f'{total / GIB:.2f}'] +
                    [f'{total / n / GIB:.2f}' for n in ranks])
    state = sum(total for _, total, _ in sharded)
    rows.append(['**sharded state**', '(sum) / N', f'**{state / GIB:.2f}**'] +
                [f'**{state / n / GIB:.2f}**' for n in ranks])
    fixed = [
        ('gathered bf16 working set', '2 x (R + 2 B) + 2 x 2 B', gathered),
        (f'activations, {batch} images', f'{batch} x A', act),
        (f'activations, {batch} images, checkpointing',
         f'{batch} x (A_ckpt + A_block)', act_ckpt),
    ]
    for name, formula, total in fixed:
        ddp = '-' if name.startswith('gathered') else f'{total / GIB:.2f}'
        rows.append([name, formula, ddp] +
                    [f'{total / GIB:.2f}'] * len(ranks))
    return rows


def table(config: str, sizes: Dict[str, float]) -> str:
    """One config's Markdown table."""
    header = ['per GPU, GiB', 'bytes', 'DDP'] + [f'N = {n}' for n in RANKS]
    lines = [
        f'`{config}`: P = {sizes["student"]:,} student parameters '
        f'(T = {sizes["trainable"]:,} trainable), E = {sizes["teacher"]:,} '
        f'teacher, R = {sizes["root"]:,} outside the blocks, B = '
        f'{sizes["block"]:,} in the largest block; A = '
        f'{sizes["act"] / 2**20:.1f} MiB, A_ckpt = '
        f'{sizes["act_ckpt"] / 2**20:.2f} MiB, A_block = '
        f'{sizes["act_block"] / 2**20:.2f} MiB per image.', '',
        '| ' + ' | '.join(header) + ' |',
        '|' + '|'.join(['---'] * len(header)) + '|'
    ]
    for row in memory_rows(sizes):
        lines.append('| ' + ' | '.join(row) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print the tables of the given configs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', help='EHM-MAE configs')
    args = parser.parse_args(argv)
    print('\n\n'.join(table(c, model_sizes(c)) for c in args.configs))


if __name__ == '__main__':
    main()
