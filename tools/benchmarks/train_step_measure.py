# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Measurements of ``bench_train_step.py``: EHM-MAE and MAE training steps.

Builds mmpretrain's ``MAE`` and ``EHMMAE`` from one config, times their
steps side by side, the pieces EHM adds, and each model's peak memory in a
process of its own. :func:`run` returns every figure as a dict;
``bench_train_step.py`` parses the command line and prints the report.
"""
import argparse
import contextlib
import copy
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from mmengine.config import Config
from mmengine.logging import MessageHub
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS
from torch import nn

import ehm_mm  # noqa: F401  (registers EHMMAE and the masking)
from ehm_mm.models.masking import (
    MaskSpec,
    build_hierarchy,
    cut_masks,
    stochastic_round,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_masking import timed, timed_pair  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, 'configs', 'ehm_mae_vit-b.py')
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'bench_train_step.py')
SMOKE_ARCH = dict(embed_dims=32, num_layers=2, num_heads=4,
                  feedforward_channels=64)
EHM_ONLY_KEYS = ('masking', 'teacher', 'ema_momentum', 'ema_half_life',
                 'attn_layers', 'feature_pool')
MIB = 2**20


def model_configs(args: argparse.Namespace) -> Dict[str, dict]:
    """The ``MAE`` and ``EHMMAE`` model dicts, from one config.

    Args:
        args (argparse.Namespace): The options.

    Returns:
        Dict[str, dict]: ``{'mae': ..., 'ehm': ...}``; the two share the
        encoder, decoder and head settings.
    """
    if not os.path.isfile(args.config):
        raise FileNotFoundError(f'--config {args.config} does not exist')
    ehm = copy.deepcopy(Config.fromfile(args.config).model.to_dict())
    if ehm.get('type') != 'EHMMAE':
        raise ValueError(f'--config {args.config} must hold an EHMMAE '
                         f"model, got type {ehm.get('type')!r}")
    backbone, neck, head = ehm['backbone'], ehm['neck'], ehm['head']
    patch = backbone.get('patch_size', 16)
    if args.smoke:
        backbone['arch'] = dict(SMOKE_ARCH)
        patch = 8
        neck.update(decoder_embed_dim=32, decoder_depth=1,
                    decoder_num_heads=4)
    elif args.arch is not None:
        backbone['arch'] = args.arch
    arch = backbone.get('arch', 'b')
    if isinstance(arch, str):
        if arch not in VisionTransformer.arch_zoo:
            raise ValueError(f'--arch {arch!r} is not one of mmpretrain\'s '
                             f'ViT archs {sorted(VisionTransformer.arch_zoo)}')
        arch = VisionTransformer.arch_zoo[arch]
    if args.img_size % patch:
        raise ValueError(f'--img-size {args.img_size} is not divisible by '
                         f'the patch size {patch}')
    grid = args.img_size // patch
    backbone.update(img_size=args.img_size, patch_size=patch)
    neck.update(embed_dim=arch['embed_dims'], patch_size=patch,
                num_patches=grid * grid)
    head.update(patch_size=patch)
    masking = ehm['masking']
    # A small grid has shallow trees: keep the schedule inside them.
    height = math.ceil(math.log2(grid * grid)) - 1
    masking['d_max'] = min(masking.get('d_max', 5.0), height)
    masking['d_min'] = min(masking.get('d_min', 0.0), height)
    if args.teacher is not None:
        ehm['teacher'] = args.teacher
    ehm.pop('data_preprocessor', None)
    mae = copy.deepcopy(ehm)
    mae['type'] = 'MAE'
    mae['backbone']['type'] = 'MAEViT'
    for key in EHM_ONLY_KEYS:
        mae.pop(key, None)
    return dict(mae=mae, ehm=ehm)


def attn_setting(value: str, num_layers: int) -> Optional[List[int]]:
    """Turn an ``--attn-layers`` entry into ``EHMMAE.attn_layers``.

    Args:
        value (str): ``'all'`` or ``K`` (the first K layers).
        num_layers (int): Encoder depth.

    Returns:
        List[int] | None: The layer indices; None means all layers.
    """
    if value == 'all':
        return None
    depth = int(value)
    if depth > num_layers:
        raise ValueError(f'--attn-layers {depth} exceeds the encoder depth '
                         f'{num_layers}')
    return list(range(depth))


def setting_name(value: str, num_layers: int) -> str:
    """A label such as ``'0-3 (4/12)'`` for an ``--attn-layers`` entry."""
    depth = num_layers if value == 'all' else int(value)
    return f'0-{depth - 1} ({depth}/{num_layers})'


def set_progress(progress: float, max_iters: int = 1000,
                 log_interval: int = 100) -> None:
    """Write ``iter`` / ``max_iters`` and the run config into the hub.

    As a Runner does; the config's ``LoggerHook`` interval decides on which
    iterations the step computes ``teacher_distance`` (not the timed one,
    unless ``(iter + 1) % log_interval == 0``).
    """
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', int(round(progress * max_iters)))
    hub.update_info('max_iters', max_iters)
    hub.update_info('cfg', 'default_hooks = dict(logger=dict('
                    f"type='LoggerHook', interval={log_interval}))\n")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == 'cuda':
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build(cfg: dict, device: torch.device) -> nn.Module:
    """Build, initialise and move one model; train mode."""
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    model.to(device)
    model.train()
    return model


def make_step(model: nn.Module, images: torch.Tensor,
              device: torch.device) -> Callable[[], None]:
    """One full training step: forward, backward, AdamW."""
    optim = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)

    def step() -> None:
        with autocast(device):
            loss = model.loss(images, [])['loss']
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


class _Stop(Exception):
    """Ends a forward at a chosen module."""


def _forward_until(vit: nn.Module, images: torch.Tensor,
                   module: nn.Module) -> None:
    """Inference forward of ``vit`` that stops after ``module`` ran."""

    def stop(*args) -> None:
        raise _Stop

    handle = module.register_forward_hook(stop)
    try:
        with torch.inference_mode():
            VisionTransformer.forward(vit, images)
    except _Stop:
        pass
    finally:
        handle.remove()


def fused_forward(vit: nn.Module, images: torch.Tensor, depth: int) -> None:
    """Inference forward of the first ``depth`` layers, fused attention."""
    _forward_until(vit, images, vit.layers[depth - 1])


def fused_prefix(vit: nn.Module, images: torch.Tensor, depth: int) -> None:
    """The network part of the teacher call, fused attention.

    Layers ``0 .. depth - 2`` and the deepest layer's pre-norm and qkv
    projection: what :func:`attention_affinity` runs besides the attention
    weights.
    """
    _forward_until(vit, images, vit.layers[depth - 1].attn.qkv)


def _resolve_last_layer(attn_layers: Optional[List[int]],
                        num_layers: int) -> int:
    """The number of layers the teacher runs for ``attn_layers``."""
    if attn_layers is None:
        return num_layers
    return max(i % num_layers for i in attn_layers) + 1


def time_components(model: nn.Module, mae: nn.Module, images: torch.Tensor,
                    attn_layers: Optional[List[int]], progress: float,
                    repeats: int, device: torch.device) -> Dict[str, float]:
    """Seconds of each part of the EHM step beyond MAE's (median of
    ``repeats``).

    Every part :meth:`EHMMAE.loss` adds, in its order: the step set-up
    (progress, seeds, host depth draw, generator), the EMA update, the
    teacher (network, affinity), the tree, the masks, the logged values,
    ``teacher_distance`` (per computation; a step computes it only on the
    logger's iterations), and the student's difference: an EHM step whose
    masks are given minus MAE's step (same weights, same batch).

    Args:
        model (nn.Module): The ``EHMMAE``.
        mae (nn.Module): The ``MAE`` with the same weights.
        images (torch.Tensor): The batch.
        attn_layers (List[int], optional): The setting.
        progress (float): Training progress of the masks.
        repeats (int): Timed calls per part.
        device (torch.device): Where it runs.

    Returns:
        Dict[str, float]: ``step_setup``, ``ema_update``, ``teacher_call``
        (forward and affinity), ``fused_forward`` (fused inference forward
        of the same layers), ``teacher_network`` (:func:`fused_prefix`, the
        part of the teacher call that is not the affinity),
        ``hierarchy``, ``masks``, ``log_vars``, ``teacher_distance`` and
        ``student`` (may be negative: EHM's student takes its mask instead
        of drawing one).
    """
    model.attn_layers = attn_layers
    teacher = (model.teacher.module
               if model.teacher is not None else model.backbone)
    depth = _resolve_last_layer(attn_layers, len(teacher.layers))
    masking = model.masking
    spec: MaskSpec = masking.spec
    batch = images.shape[0]
    out = {}

    def step_setup() -> None:
        # training_masks' host work around the masking
        p = model.current_progress()
        masking.draw_depths(p, batch, random.Random(model.mask_seed('depth')))
        model._mask_generator(device)

    out['step_setup'] = timed(step_setup, repeats, device)
    with autocast(device):
        if model.teacher is not None:
            out['ema_update'] = timed(
                lambda: model.teacher.update_parameters(model.backbone),
                repeats, device)
        else:
            out['ema_update'] = 0.0
        teacher.eval()
        out['fused_forward'] = timed(
            lambda: fused_forward(teacher, images, depth), repeats, device)
        out['teacher_network'] = timed(
            lambda: fused_prefix(teacher, images, depth), repeats, device)
        if model.teacher is not None:
            model.teacher.eval()
        else:
            model.backbone.train()
        out['teacher_call'] = timed(
            lambda: model.teacher_affinity(images), repeats, device)
        affinity = model.teacher_affinity(images)
    levels = spec.tree_levels(math.ceil(masking.depth_at(progress)))
    out['hierarchy'] = timed(
        lambda: build_hierarchy(affinity, spec.grid_size, num_levels=levels,
                                **spec.tree.kwargs()), repeats, device)
    hierarchy = build_hierarchy(affinity, spec.grid_size, num_levels=levels,
                                **spec.tree.kwargs())

    def masks():
        # What EvolvedHierarchicalMasking does besides the tree.
        noise = torch.rand(batch, spec.num_patches, device=device)
        drawn = stochastic_round(masking.depth_at(progress), batch, device)
        return cut_masks(hierarchy, drawn, noise, spec)

    out['masks'] = timed(masks, repeats, device)
    result = masks()
    log_vars = model.teacher_log_vars
    model.teacher_log_vars = lambda: {}  # timed on its own below
    out['log_vars'] = timed(lambda: model.masking_log_vars(result), repeats,
                            device)
    del model.teacher_log_vars
    out['teacher_distance'] = timed(lambda: log_vars(always=True), repeats,
                                    device) if model.teacher else 0.0
    # the student: an EHM step with these masks against MAE's step
    ehm_step, mae_step = make_step(model, images, device), make_step(
        mae, images, device)
    model.training_masks = lambda inputs: result
    try:
        with_masks, plain = timed_pair(ehm_step, mae_step, repeats, device)
    finally:
        del model.training_masks
    out['student'] = with_masks - plain
    return out


def peak_memory(kind: str, setting: str, args: argparse.Namespace) -> dict:
    """Peak memory of one model's steps, measured in a child process.

    Args:
        kind (str): ``'mae'`` or ``'ehm'``.
        setting (str): The ``--attn-layers`` entry (EHM only).
        args (argparse.Namespace): The options (passed on).

    Returns:
        dict: ``peak_mib`` and ``how`` (the measurement).
    """
    cmd = [sys.executable, SCRIPT,
           '--memory-child', f'{kind}:{setting}', '--config', args.config,
           '--img-size', str(args.img_size), '--batch-size',
           str(args.batch_size), '--device', args.device,
           '--progress', str(args.progress)]
    for flag in ('arch', 'teacher', 'threads'):
        if getattr(args, flag) is not None:
            cmd += [f'--{flag}', str(getattr(args, flag))]
    if args.smoke:
        cmd.append('--smoke')
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f'memory process for {kind} {setting} failed:\n'
                           f'{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_peak_bytes() -> int:
    """The process's peak resident set size in bytes.

    ``VmHWM`` of ``/proc/self/status`` (this process's own peak, which
    :func:`_reset_peak_rss` can reset); ``ru_maxrss`` where there is no
    ``/proc``. (``ru_maxrss`` alone is no use in a child started by
    ``fork`` + ``exec``: Linux keeps the parent's peak at the ``exec`` in
    it.)
    """
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0).

    Without the reset, the peak would still hold that of the imports.

    Returns:
        bool: Whether it worked.
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def memory_child(args: argparse.Namespace) -> None:
    """Child process: build one model, run steps, print peak memory JSON."""
    kind, setting = args.memory_child.split(':', 1)
    device = torch.device(args.device)
    cfgs = model_configs(args)
    set_progress(args.progress, log_interval=args.log_interval)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size,
                         device=device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        how = 'torch.cuda.max_memory_allocated'
    else:
        reset = _reset_peak_rss()
        before = _rss_peak_bytes()
        how = ('peak RSS (VmHWM) growth from before build to after the '
               'steps' + ('' if reset else
                          ', peak not reset after the imports'))
    model = build(cfgs[kind], device)
    if kind == 'ehm':
        model.attn_layers = attn_setting(setting,
                                         len(model.backbone.layers))
    step = make_step(model, images, device)
    for _ in range(max(args.warmup, 1) + 1):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _rss_peak_bytes()
    print(json.dumps(dict(peak_mib=(peak - before) / MIB, how=how)))


def log(message: str) -> None:
    """Print a progress note to stderr."""
    print(f'... {message}', file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict:
    """Time both models; return every figure.

    Args:
        args (argparse.Namespace): The options.

    Returns:
        dict: The results (also what ``--json`` writes).
    """
    device = torch.device(args.device)
    cfgs = model_configs(args)
    set_progress(args.progress, log_interval=args.log_interval)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size,
                         device=device)
    log('building models')
    mae = build(cfgs['mae'], device)
    ehm = build(cfgs['ehm'], device)
    ehm.load_state_dict(mae.state_dict(), strict=False)  # same weights
    if ehm.teacher is not None:
        ehm.teacher.module.load_state_dict(ehm.backbone.state_dict())
    num_layers = len(ehm.backbone.layers)
    settings = list(dict.fromkeys(args.attn_layers))
    for value in settings:
        attn_setting(value, num_layers)  # validate before timing
    steps = {'mae': make_step(mae, images, device),
             'ehm': make_step(ehm, images, device)}
    times = {key: [] for key in ['mae'] + settings}

    keys = ['mae'] + settings

    def one_round(index: int, record: bool) -> None:
        # Rotate the order every round, so that no model always runs
        # right after the same other one.
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            if key != 'mae':
                ehm.attn_layers = attn_setting(key, num_layers)
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            steps['mae' if key == 'mae' else 'ehm']()
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            if record:
                times[key].append(time.perf_counter() - start)

    log(f'{args.warmup} warm-up + {args.steps} timed rounds')
    for index in range(args.warmup):
        one_round(index, False)
    for index in range(args.steps):
        one_round(index, True)
    step_time = {key: statistics.median(val) for key, val in times.items()}
    # The ratio of steps timed in the same round (close in time, so under
    # the same load from other processes), median over the rounds.
    ratio = {
        value: statistics.median(
            t / m for t, m in zip(times[value], times['mae']))
        for value in settings
    }
    components = {}
    log('EHM components')
    for value in settings:
        components[value] = time_components(
            ehm, mae, images, attn_setting(value, num_layers), args.progress,
            args.repeats, device)
    memory = {}
    if not args.no_memory:
        log('peak memory, one process per model')
        memory['mae'] = peak_memory('mae', '-', args)
        for value in settings:
            memory[value] = peak_memory('ehm', value, args)
    h, w = ehm.grid_size
    return dict(
        device=str(device),
        device_name=(torch.cuda.get_device_name(device)
                     if device.type == 'cuda' else 'cpu'),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        precision='bf16 autocast' if device.type == 'cuda' else 'float32',
        arch=cfgs['ehm']['backbone']['arch'],
        num_layers=num_layers,
        img_size=args.img_size,
        grid=[h, w],
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        teacher=ehm.teacher_type,
        progress=args.progress,
        log_interval=args.log_interval,
        mask_depth=ehm.masking.depth_at(args.progress),
        settings=settings,
        setting_names={v: setting_name(v, num_layers) for v in settings},
        step_times=times,
        step_time=step_time,
        ratio=ratio,
        components=components,
        memory=memory)


