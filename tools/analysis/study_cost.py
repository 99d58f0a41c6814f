# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""GPU-hours of a study at ImageNet scale, per arm and in total.

For every arm of a study config (``study_arms``) and every stage a run goes
through (the pretraining, then each ``study_evaluation`` stage), the tool
counts the images the stage processes (epochs x images of
``study_images``) and the multiply-accumulates (MACs) a ViT spends on
each, and divides by a throughput in MACs per GPU-second:

* ``--throughput-json FILE``: measured, from the ``--json`` output of
  ``tools/benchmarks/bench_train_step.py`` run on the GPU the study will
  use (its MAE images/s of the model it timed, and its EHM/MAE step-time
  ratio);
* otherwise **from published throughput**: MAE's ViT-L/16, 800 epochs of
  ImageNet-1K (1,281,167 images) in about 42 h on 64 V100 GPUs
  (facebookresearch/mae, PRETRAIN.md), i.e. 105.9 images/s per V100;
  the EHM/MAE ratio is then this project's measurement, 1.50 for the
  ViT-B/16 step with the affinity from all 12 layers on a CPU
  (docs/en/benchmarks_and_results.md), labelled as such.

Both carry one throughput in MACs per second over to every model and stage
(a smaller ViT, a forward-only evaluation): an estimate, which assumes the
GPU is as busy in every stage as in the timed one.

MACs per image, for a ViT of width ``D``, MLP width ``H``, ``L`` blocks,
``N`` patches of ``p x p`` pixels:

* one block on ``s`` tokens: ``s (4 D^2 + 2 D H) + 2 s^2 D`` (projections,
  MLP, attention scores and weighted sum);
* the encoder on all tokens: ``3 p^2 D N + L block(1 + N)``;
* an MAE training forward: the patch embedding of all patches, the encoder
  on the ``1 + N (1 - r)`` visible tokens, the decoder projection, the
  decoder's blocks on ``1 + N`` tokens and the pixel head; backward twice
  the forward, so a training step costs 3 forwards;
* EHM arms whose masks need the teacher's affinity (the mask source's
  ``requires_affinity``, a depth above 0 and ``affinity_source='teacher'``)
  cost the MAE step times the EHM/MAE ratio; every other arm costs MAE's.

Stages: ``tool='test'`` (k-NN) is one forward of the encoder on every
image of its dataset's splits; ``tool='train'`` is ``max_epochs`` passes
over the training images (forward and backward, or forward only when the
encoder is frozen) plus a forward over the validation images every
``val_interval`` epochs, or, for an iteration-based config (mmseg),
``max_iters`` steps of ``batch_size`` images on ``--world-size`` GPUs, the
encoder only (the decoder heads are not counted: a lower bound). A stage
whose ``requires`` package is missing is left out and named.

Example:
    python tools/analysis/study_cost.py \\
        configs/study/imagenet/masking_study_vit-b_in100.py
    python tools/analysis/study_cost.py CONFIG --throughput-json bench.json
"""
import argparse
import copy
import importlib.util
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, REPO)

#: MAE's published pretraining time (facebookresearch/mae, PRETRAIN.md):
#: ViT-L/16, 800 epochs of ImageNet-1K, ~42 h on 64 V100 GPUs.
PUBLISHED = dict(
    arch='large', epochs=800, images=1_281_167, hours=42.0, gpus=64,
    gpu='V100', source='facebookresearch/mae PRETRAIN.md: MAE ViT-L/16, '
    '800 epochs of ImageNet-1K in ~42 h on 64 V100 GPUs')
#: EHM/MAE step-time ratio measured by this project (ViT-B/16, affinity
#: from all 12 layers, CPU), docs/en/benchmarks_and_results.md.
MEASURED_CPU_EHM_RATIO = 1.50
CPU_RATIO_SOURCE = ('EHM/MAE step time 1.50, ViT-B/16, all 12 layers, '
                    'measured on CPU (docs/en/benchmarks_and_results.md)')
#: The decoder of mmpretrain's MAE recipes (``MAEPretrainDecoder``).
MAE_DECODER = dict(width=512, depth=8, mlp_ratio=4)


def block_macs(tokens: int, width: int, hidden: int) -> int:
    """MACs of one transformer block on ``tokens`` tokens.

    Args:
        tokens (int): Sequence length ``s``.
        width (int): Channels ``D``.
        hidden (int): MLP width ``H``.

    Returns:
        int: ``s (4 D^2 + 2 D H) + 2 s^2 D``.
    """
    return tokens * (4 * width * width + 2 * width * hidden) + \
        2 * tokens * tokens * width


def vit_dims(backbone: dict) -> Dict[str, int]:
    """Width, MLP width, depth, patch and image size of a ViT config.

    Args:
        backbone (dict): An mmpretrain ``VisionTransformer`` / ``MAEViT``
            config (``arch``: a name or a dict with ``embed_dims``,
            ``num_layers``, ``feedforward_channels``; ``patch_size``,
            ``img_size``) or an mmseg ``MAE`` config (``embed_dims``,
            ``num_layers``, ``mlp_ratio``).

    Returns:
        dict: ``width``, ``hidden``, ``layers``, ``patch``, ``patches``.

    Raises:
        ValueError: When the arch is unknown to mmpretrain.
    """
    from mmpretrain.models import VisionTransformer
    if 'embed_dims' in backbone and 'arch' not in backbone:
        width = int(backbone['embed_dims'])
        dims = dict(width=width, layers=int(backbone['num_layers']),
                    hidden=int(backbone.get('mlp_ratio', 4) * width))
    elif isinstance(backbone.get('arch'), dict):  # a custom arch
        arch = backbone['arch']
        dims = dict(width=int(arch['embed_dims']),
                    layers=int(arch['num_layers']),
                    hidden=int(arch['feedforward_channels']))
    else:
        arch = backbone.get('arch', 'base')
        if arch not in VisionTransformer.arch_zoo:
            raise ValueError(f'unknown ViT arch {arch!r}')
        zoo = VisionTransformer.arch_zoo[arch]
        dims = dict(width=zoo['embed_dims'], layers=zoo['num_layers'],
                    hidden=zoo['feedforward_channels'])
    patch = int(backbone.get('patch_size', 16))
    size = backbone.get('img_size', 224)
    height, width_px = (size, size) if isinstance(size, int) else size
    dims.update(patch=patch,
                patches=(height // patch) * (width_px // patch))
    return dims


def encoder_macs(dims: Dict[str, int]) -> int:
    """MACs of the encoder's forward on all tokens of one image."""
    embed = 3 * dims['patch']**2 * dims['width'] * dims['patches']
    return embed + dims['layers'] * block_macs(
        1 + dims['patches'], dims['width'], dims['hidden'])


def mae_forward_macs(dims: Dict[str, int], mask_ratio: float,
                     decoder: Optional[dict] = None) -> int:
    """MACs of an MAE training forward of one image.

    Args:
        dims (dict): The encoder (:func:`vit_dims`).
        mask_ratio (float): Fraction of patches masked.
        decoder (dict, optional): ``width``, ``depth``, ``mlp_ratio``;
            None means MAE's (512 channels, 8 blocks). Defaults to None.

    Returns:
        int: Patch embedding + encoder on the visible tokens + decoder
        projection + decoder blocks on all tokens + pixel head.
    """
    decoder = decoder or MAE_DECODER
    n, d, pixels = dims['patches'], dims['width'], 3 * dims['patch']**2
    visible = 1 + round(n * (1 - mask_ratio))
    dec = decoder['width']
    return (pixels * d * n
            + dims['layers'] * block_macs(visible, d, dims['hidden'])
            + visible * d * dec
            + decoder['depth'] * block_macs(
                1 + n, dec, int(decoder['mlp_ratio'] * dec))
            + n * dec * pixels)


def published_rate() -> Tuple[float, str]:
    """MACs per GPU-second from MAE's published ViT-L/16 pretraining time.

    Returns:
        tuple[float, str]: The rate and its label.
    """
    p = PUBLISHED
    per_gpu = p['images'] * p['epochs'] / (p['hours'] * 3600 * p['gpus'])
    dims = vit_dims(dict(arch=p['arch']))
    rate = per_gpu * 3 * mae_forward_macs(dims, 0.75)
    return rate, (f"from published throughput: {p['source']} = "
                  f"{per_gpu:.1f} images/s per {p['gpu']}")


def measured_rate(path: str, config_attn_layers=None
                  ) -> Tuple[float, float, str]:
    """Rate and EHM/MAE ratio from a ``bench_train_step.py --json`` file.

    Args:
        path (str): The JSON file.
        config_attn_layers: The study model's ``attn_layers`` (None: all
            layers, the setting ``'all'``). Defaults to None.

    Returns:
        tuple[float, float, str]: MACs per GPU-second, the EHM/MAE ratio of
        that setting and a label naming the device.

    Raises:
        ValueError: When the file lacks the MAE step time or the setting.
    """
    with open(path) as f:
        res = json.load(f)
    for key in ('step_time', 'batch_size', 'arch', 'img_size', 'ratio'):
        if key not in res:
            raise ValueError(f'{path} is not bench_train_step.py --json '
                             f'output: no {key!r}')
    if 'mae' not in res['step_time']:
        raise ValueError(f'{path} has no MAE step time')
    setting = 'all' if config_attn_layers is None else str(
        config_attn_layers)
    if setting not in res['ratio']:
        raise ValueError(
            f'{path} has no EHM/MAE ratio for attn_layers {setting!r} (the '
            f"study model's); it timed {sorted(res['ratio'])}: run "
            f'bench_train_step.py --attn-layers {setting}')
    per_gpu = res['batch_size'] / res['step_time']['mae']
    grid = res.get('grid') or [res['img_size'] // 16] * 2
    dims = vit_dims(dict(arch=res['arch'], img_size=res['img_size'],
                         patch_size=res['img_size'] // grid[0]))
    rate = per_gpu * 3 * mae_forward_macs(dims, 0.75)
    label = (f"measured: bench_train_step.py on {res.get('device_name')} "
             f"({res.get('precision')}), MAE ViT-{res['arch']} "
             f"{per_gpu:.1f} images/s, EHM/MAE "
             f"{res['ratio'][setting]:.3f} ({path})")
    return rate, float(res['ratio'][setting]), label


def arm_configs(cfg: Config) -> Dict[str, Config]:
    """Each arm's run config: the study config with the arm merged in."""
    arms = cfg.get('study_arms')
    if not arms:
        raise ValueError(f'{cfg.filename} defines no study_arms')
    out = {}
    for name in arms:
        run = copy.deepcopy(cfg)  # merging consumes the _delete_ flags
        run.merge_from_dict(copy.deepcopy(run.study_arms[name].to_dict()))
        out[name] = run
    return out


def needs_teacher(model: dict) -> bool:
    """Whether a model's masks need the teacher's affinity forward.

    Args:
        model (dict): The run config's ``model``.

    Returns:
        bool: True for a mask source with ``requires_affinity``, a depth
        above 0 and ``affinity_source='teacher'`` (the default).
    """
    from ehm_mm.registry import MODELS
    masking = dict(model['masking'])
    cls = MODELS.get(masking['type'])
    if cls is None:
        raise ValueError(f"unknown mask source {masking['type']!r}")
    return (bool(cls.requires_affinity)
            and float(masking.get('d_max', 1.0)) > 0
            and model.get('affinity_source', 'teacher') == 'teacher')


def _split_images(dataset: dict, images: Dict[str, int]) -> int:
    """Images of a (possibly concatenated) dataset, by split name."""
    if dataset.get('type') == 'ConcatDataset':
        return sum(_split_images(d, images) for d in dataset['datasets'])
    split = dataset.get('split')
    if split not in images:
        raise ValueError(f'study_images has no count for split {split!r}')
    return images[split]


def stage_macs(stage: dict, images: Dict[str, int],
               world_size: int) -> Tuple[float, str]:
    """MACs of one evaluation stage of one run.

    Args:
        stage (dict): A ``study_evaluation`` entry.
        images (dict): ``study_images``.
        world_size (int): GPUs of an iteration-based recipe.

    Returns:
        tuple[float, str]: The MACs and how they were counted.
    """
    cfg = Config.fromfile(osp.join(REPO, stage['config']))  # repo-relative
    dims = vit_dims(cfg.model.backbone)
    fwd = encoder_macs(dims)
    if stage['tool'] == 'test':
        n = _split_images(cfg.test_dataloader.dataset, images)
        return n * fwd, f'{n:,} images x 1 forward'
    train_cfg = cfg.train_cfg
    if 'max_iters' in train_cfg:
        n = int(train_cfg['max_iters']) * int(
            cfg.train_dataloader.batch_size) * world_size
        return 3 * n * fwd, (f'{n:,} images x 3 forwards, encoder only '
                             '(heads not counted: a lower bound)')
    epochs = int(train_cfg['max_epochs'])
    interval = int(train_cfg.get('val_interval', 1))
    frozen = int(cfg.model.backbone.get('frozen_stages', -1)) >= \
        dims['layers']
    passes = 1 if frozen else 3
    n_train = epochs * _split_images(cfg.train_dataloader.dataset, images)
    n_val = (epochs // interval) * _split_images(
        cfg.val_dataloader.dataset, images)
    return (passes * n_train + n_val) * fwd, (
        f'{epochs} epochs: {n_train:,} images x {passes} forward'
        f'{"s" if passes > 1 else ""} (encoder '
        f'{"frozen" if frozen else "trained"}) + {n_val:,} validation '
        'forwards')


def study_cost(config: str,
               rate: float,
               ehm_ratio: float,
               world_size: int = 8) -> dict:
    """GPU-hours per run and per arm of a study config.

    Args:
        config (str): The study config.
        rate (float): MACs per GPU-second.
        ehm_ratio (float): EHM/MAE step-time ratio for arms that run the
            teacher's affinity forward.
        world_size (int): GPUs of iteration-based evaluation recipes.
            Defaults to 8.

    Returns:
        dict: ``arms`` (name -> seeds, primary, factor, per-stage and
        per-run GPU-hours, total, total of pretraining and the endpoint
        stages), ``stages`` (how each was counted), ``skipped`` (stages
        left out, with why), ``totals`` (arms of the ``(a)`` primary
        contrasts, with every stage and with the endpoint stages only;
        arms of all primary contrasts; all arms), ``question_a_arms`` and
        ``endpoint_stages`` (those reporting a primary endpoint).
    """
    cfg = Config.fromfile(config)
    images = dict(cfg.get('study_images') or {})
    if 'train' not in images:
        raise ValueError(f'{config} needs study_images with a train count')
    seeds = dict(cfg.get('study_seeds') or {})
    if not {'primary', 'exploratory'} <= set(seeds):
        raise ValueError(f'{config} needs study_seeds with primary and '
                         'exploratory counts')
    prereg = cfg.get('study_preregistration') or {}
    contrasts = {c['name']: c for c in cfg.get('study_contrasts', [])}
    primary = set()
    question_a = set()
    for name in prereg.get('primary_contrasts', []):
        arms = set(contrasts[name]['arms']) | set(
            contrasts[name]['reference'])
        primary |= arms
        if name.startswith('(a)'):
            question_a |= arms
    endpoints = set(prereg.get('primary_endpoints', []))
    epochs = int(cfg.train_cfg['max_epochs'])
    runs = arm_configs(cfg)
    stages, skipped = {}, {}
    endpoint_stages = set()
    for stage in cfg.get('study_evaluation', []):
        if stage['report_as'] in endpoints:
            endpoint_stages.add(stage['name'])
        missing = [p for p in stage.get('requires', [])
                   if importlib.util.find_spec(p) is None]
        if missing:
            skipped[stage['name']] = f'needs {missing}, not installed'
            continue
        macs, how = stage_macs(stage, images, world_size)
        stages[stage['name']] = dict(hours=macs / rate / 3600, how=how)
    arms = {}
    for name, run in runs.items():
        dims = vit_dims(run.model.backbone)
        ratio = run.model.masking.get('mask_ratio', 0.75)
        factor = ehm_ratio if needs_teacher(run.model) else 1.0
        step = 3 * mae_forward_macs(
            dims, ratio, dict(width=run.model.neck.decoder_embed_dim,
                              depth=run.model.neck.decoder_depth,
                              mlp_ratio=run.model.neck.get('mlp_ratio', 4)))
        pretrain = epochs * images['train'] * step * factor / rate / 3600
        per_run = pretrain + sum(s['hours'] for s in stages.values())
        endpoint_run = pretrain + sum(
            s['hours'] for k, s in stages.items() if k in endpoint_stages)
        n = seeds['primary'] if name in primary else seeds['exploratory']
        arms[name] = dict(
            seeds=n, primary=name in primary, factor=factor,
            pretrain=pretrain,
            stages={k: s['hours'] for k, s in stages.items()},
            per_run=per_run, total=per_run * n,
            endpoint_total=endpoint_run * n)
    totals = dict(
        question_a=sum(a['total'] for k, a in arms.items()
                       if k in question_a),
        question_a_endpoint=sum(a['endpoint_total']
                                for k, a in arms.items()
                                if k in question_a),
        primary=sum(a['total'] for a in arms.values() if a['primary']),
        all=sum(a['total'] for a in arms.values()))
    return dict(config=config, epochs=epochs, images=images, arms=arms,
                stages={k: s['how'] for k, s in stages.items()},
                skipped=skipped, totals=totals,
                question_a_arms=sorted(question_a),
                endpoint_stages=sorted(endpoint_stages))


def markdown(cost: dict, label: str, ratio_label: str) -> str:
    """The cost as a Markdown table with its inputs.

    Args:
        cost (dict): :func:`study_cost`'s result.
        label (str): Where the throughput came from.
        ratio_label (str): Where the EHM/MAE ratio came from.

    Returns:
        str: Inputs, one row per arm and the totals.
    """
    names = list(next(iter(cost['arms'].values()))['stages'])
    lines = [
        f"{cost['config']}: pretraining {cost['epochs']} epochs of "
        f"{cost['images']['train']:,} images",
        f'throughput {label}',
        f'EHM/MAE ratio: {ratio_label}',
    ]
    lines += [f'stage {k}: {how}' for k, how in cost['stages'].items()]
    lines += [f'stage {k} left out: {why}'
              for k, why in cost['skipped'].items()]
    lines += ['', '| arm | seeds | step factor | pretrain | ' +
              ' | '.join(names) + ' | per run | GPU-hours |',
              '|---|---|---|---|' + '---|' * len(names) + '---|---|']
    for name, arm in cost['arms'].items():
        kind = 'primary' if arm['primary'] else 'exploratory'
        stage_cells = ' | '.join(f"{arm['stages'][k]:.1f}" for k in names)
        lines.append(
            f"| {name} ({kind}) | {arm['seeds']} | {arm['factor']:.2f} | "
            f"{arm['pretrain']:.1f} | {stage_cells} | "
            f"{arm['per_run']:.1f} | {arm['total']:,.0f} |")
    t = cost['totals']
    lines += [
        '',
        f"(a) ({', '.join(cost['question_a_arms'])}): "
        f"{t['question_a']:,.0f} GPU-hours with every stage, "
        f"{t['question_a_endpoint']:,.0f} with pretraining and the "
        f"primary endpoint's stage ({', '.join(cost['endpoint_stages'])}) "
        'only',
        f"primary contrasts' arms: {t['primary']:,.0f} GPU-hours",
        f"all arms: {t['all']:,.0f} GPU-hours",
    ]
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description='GPU-hours of a study config, per arm and in total')
    parser.add_argument('config', help='study config (study_arms, '
                        'study_evaluation, study_images, study_seeds)')
    parser.add_argument(
        '--throughput-json', default=None,
        help='bench_train_step.py --json output measured on the GPU '
        '(default: the published MAE throughput)')
    parser.add_argument(
        '--ehm-ratio', type=float, default=None,
        help='EHM/MAE step-time ratio (default: the JSON\'s, else '
        f'{MEASURED_CPU_EHM_RATIO}, measured on CPU)')
    parser.add_argument('--world-size', type=int, default=8,
                        help='GPUs of iteration-based evaluation recipes')
    parser.add_argument('--json', default=None, help='also write the cost')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Print the cost table."""
    import ehm_mm  # noqa: F401  (registers the mask sources)
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.throughput_json:
        rate, ratio, label = measured_rate(
            args.throughput_json, cfg.model.get('attn_layers'))
        ratio_label = f'{ratio:.3f}, measured with the throughput'
    else:
        rate, label = published_rate()
        ratio, ratio_label = MEASURED_CPU_EHM_RATIO, CPU_RATIO_SOURCE
    if args.ehm_ratio is not None:
        ratio, ratio_label = args.ehm_ratio, f'{args.ehm_ratio} (given)'
    cost = study_cost(args.config, rate, ratio, args.world_size)
    print(markdown(cost, label, ratio_label))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(cost, throughput=label, ehm_ratio=ratio_label),
                      f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
