# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Convert an EHM checkpoint for a downstream consumer and check the load.

The command-line converters in ``tools/model_converters/`` are thin wrappers
around :func:`convert_checkpoint`. A conversion

1. extracts the encoder (student by default; the decoder, mask token, head
   and EMA teacher are dropped and counted), see :func:`extract_encoder`;
2. writes it in the consumer's layout (:data:`CONSUMERS`);
3. builds the consumer's backbone (from ``--config`` or with the shape read
   from the checkpoint), loads the written file through the consumer's own
   loading path and accounts for every key, so a conversion that would
   load partially fails here instead of in a training job.
"""
import os.path as osp
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.registry import DefaultScope
from torch import Tensor, nn

from ehm_mm.utils.atomic_io import atomic_path
from ehm_mm.utils.stack import (
    FULL_ONLY_PACKAGES,
    INSTALL_FULL,
    StackError,
    missing_for_packages,
)

from .encoder_checkpoint import (
    ARCH_KEYS,
    ExtractedEncoder,
    check_vit_arch,
    declared_vit_arch,
    extract_encoder,
    infer_vit_arch,
    mmpretrain_to_timm,
    resize_vit_pos_embed,
)
from .key_accounting import KeyReport, account_keys, check_key_report

#: Output layout of each consumer.
CONSUMERS: Dict[str, str] = {
    'mmpretrain': 'state_dict with backbone.* keys (mmpretrain '
    'VisionTransformer, init_cfg prefix "backbone.")',
    'mmseg': 'state_dict with MAEViT keys, no prefix (mmseg MAE / StrictMAE)',
    'timm': 'model dict with official-MAE / timm keys (ViTDet, detectron2, '
    'timm, ViTDetBackbone)',
}


@dataclass
class ConversionResult:
    """What a conversion kept, wrote and how the consumer took it.

    Args:
        encoder (ExtractedEncoder): The extracted encoder.
        num_written (int): Number of tensors written.
        consumer (str): The consumer name.
        checked_by (str): Class of the consumer backbone the file was
            loaded into.
        report (KeyReport): Key accounting of that load.
        allowed_missing (tuple[str]): Patterns of the consumer's new
            weights.
        allowed_unexpected (tuple[str]): Patterns of the pretrained
            weights the consumer does not use.
    """

    encoder: ExtractedEncoder
    num_written: int
    consumer: str
    checked_by: str
    report: KeyReport
    allowed_missing: Tuple[str, ...]
    allowed_unexpected: Tuple[str, ...]

    def lines(self) -> List[str]:
        """Human-readable summary, one item per printed line.

        Returns:
            list[str]: The lines.
        """
        report = self.report
        return [
            f'extracted: {self.encoder.summary()}',
            f'written: {self.num_written} tensors in {self.consumer} layout',
            f'consumer check ({self.checked_by}): {report.summary()}',
            f'  missing = new weights of the consumer '
            f'{list(self.allowed_missing)}: {report.missing}',
            f'  unexpected = pretrained weights the consumer does not use '
            f'{list(self.allowed_unexpected)}: {report.unexpected}',
        ]


def to_consumer_checkpoint(encoder: ExtractedEncoder, consumer: str,
                           meta: Optional[dict] = None) -> dict:
    """Wrap a canonical encoder state dict in a consumer's checkpoint layout.

    Args:
        encoder (ExtractedEncoder): From :func:`extract_encoder`.
        consumer (str): One of :data:`CONSUMERS`.
        meta (dict, optional): Stored under ``'meta'``. Defaults to None.

    Returns:
        dict: The checkpoint to save.

    Raises:
        ValueError: If ``consumer`` is unknown.
    """
    state_dict = encoder.state_dict
    if consumer == 'mmpretrain':
        body = {
            'state_dict':
            OrderedDict((f'backbone.{key}', value)
                        for key, value in state_dict.items())
        }
    elif consumer == 'mmseg':
        body = {'state_dict': OrderedDict(state_dict)}
    elif consumer == 'timm':
        body = {'model': mmpretrain_to_timm(state_dict)}
    else:
        raise ValueError(
            f'consumer must be one of {sorted(CONSUMERS)}, got {consumer!r}.')
    body['meta'] = dict(meta or {})
    return body


def _backbone_cfg_from_config(config: str, expected_type: str) -> dict:
    """``model.backbone`` of a config, checked to be ``expected_type``."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config} does not exist.')
    cfg = Config.fromfile(config)
    backbone = cfg.get('model', {}).get('backbone')
    if backbone is None:
        raise ValueError(f'{config} has no model.backbone.')
    backbone = backbone.to_dict() if hasattr(backbone, 'to_dict') else dict(
        backbone)
    if backbone.get('type') != expected_type:
        raise ValueError(
            f'{config}: model.backbone.type is {backbone.get("type")!r}, '
            f'the check needs {expected_type!r}.')
    backbone.pop('init_cfg', None)
    backbone.pop('pretrained', None)
    return backbone


def _heads_for(embed_dims: int) -> int:
    # Key names and pretrained shapes do not depend on the head count.
    return embed_dims // 64 if embed_dims % 64 == 0 else 1


_Check = Tuple[str, KeyReport, Tuple[str, ...], Tuple[str, ...]]

#: Registry scope and backbone type that check each consumer's file.
_CONSUMER_BACKBONES: Dict[str, Tuple[str, str]] = {
    'mmpretrain': ('mmpretrain', 'VisionTransformer'),
    'mmseg': ('mmseg', 'StrictMAE'),
    'timm': ('mmdet', 'ViTDetBackbone'),
}


def _default_backbone_cfg(consumer: str, arch: Dict[str, int]) -> dict:
    """A consumer backbone with the checkpoint's own shape."""
    embed_dims, num_layers = arch['embed_dims'], arch['num_layers']
    vit = dict(
        embed_dims=embed_dims,
        num_layers=num_layers,
        num_heads=_heads_for(embed_dims),
        feedforward_channels=arch['feedforward_channels'])
    cfg = dict(
        type=_CONSUMER_BACKBONES[consumer][1],
        img_size=arch['img_size'],
        patch_size=arch['patch_size'],
        in_channels=arch['in_channels'])
    if consumer == 'mmseg':
        cfg.update(
            embed_dims=embed_dims,
            num_layers=num_layers,
            num_heads=vit['num_heads'],
            mlp_ratio=vit['feedforward_channels'] // embed_dims,
            init_values=1.0,
            norm_cfg=dict(type='LN', eps=1e-6),
            out_indices=[num_layers - 1])
    elif consumer == 'timm':
        vit['global_attn_indexes'] = list(range(2, num_layers, 3))
        cfg.update(
            arch=vit,
            window_size=min(14, arch['img_size'] // arch['patch_size']))
    else:
        cfg.update(arch=vit, out_type='cls_token', final_norm=True)
    return cfg


def require_consumer_stack(consumer: str) -> None:
    """Fail at once, naming what to install, if the consumer check cannot run.

    The mmseg and timm converters check the written weights with an mmseg
    or mmdet backbone, which the ``pretrain`` install profile lacks.

    Args:
        consumer (str): One of :data:`CONSUMERS`.

    Raises:
        StackError: If the consumer's check needs a package (or mmcv's
            compiled ops) this environment lacks.
    """
    scope, backbone_type = _CONSUMER_BACKBONES[consumer]
    if scope not in FULL_ONLY_PACKAGES:
        return
    missing = missing_for_packages({scope})
    if missing:
        raise StackError(
            f'the {consumer} converter checks the weights it writes by '
            f'loading them into {scope}\'s {backbone_type}, which needs '
            f'{FULL_ONLY_PACKAGES[scope]} and mmcv built with its compiled '
            f'ops (the "full" install profile). This environment '
            f'({sys.prefix}) lacks: {", ".join(missing)}.\nInstall the full '
            f'stack with\n    {INSTALL_FULL}')


def _build_backbone(consumer: str, arch: Dict[str, int],
                    config: Optional[str],
                    init_cfg: Optional[dict] = None) -> nn.Module:
    """Build the backbone of ``config`` (or a default one) in its scope."""
    import importlib
    scope, backbone_type = _CONSUMER_BACKBONES[consumer]
    if scope != 'mmpretrain':  # registers StrictMAE / ViTDetBackbone
        importlib.import_module(f'{__package__}.{scope}')
    if config is not None:
        cfg = _backbone_cfg_from_config(config, backbone_type)
    else:
        cfg = _default_backbone_cfg(consumer, arch)
    if init_cfg is not None:
        cfg['init_cfg'] = init_cfg
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg)


def _check_accounted(consumer: str, path: str, arch: Dict[str, int],
                     config: Optional[str]) -> _Check:
    """Load through an accounting backbone's own ``init_weights``."""
    backbone = _build_backbone(consumer, arch, config,
                               dict(type='Pretrained', checkpoint=path))
    backbone.init_weights()
    return (type(backbone).__name__, backbone.pretrained_report,
            backbone.allowed_missing, backbone.allowed_unexpected)


def mmpretrain_vit_allowed_keys(
        backbone: nn.Module) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """Documented key differences for an mmpretrain ``VisionTransformer``.

    MAE fine-tuning (``final_norm=False, out_type='avg_featmap'``) drops
    the pretrained final norm ``ln1`` and learns a new ``ln2`` on the
    averaged patch tokens; linear probing (``final_norm=True,
    out_type='cls_token'``) uses every pretrained weight.

    Args:
        backbone (nn.Module): A built mmpretrain ``VisionTransformer``.

    Returns:
        tuple: ``(allowed_missing, allowed_unexpected)`` patterns.
    """
    missing, unexpected = [], []
    if not getattr(backbone, 'final_norm', True):
        unexpected.append(r'ln1\.(weight|bias)')
    if isinstance(getattr(backbone, 'ln2', None), nn.LayerNorm):
        missing.append(r'ln2\.(weight|bias)')
    return tuple(missing), tuple(unexpected)


def _check_mmpretrain(path: str, arch: Dict[str, int],
                      config: Optional[str]) -> _Check:
    """Account for what mmengine's ``Pretrained`` init would load."""
    from mmengine.runner.checkpoint import _load_checkpoint_with_prefix
    backbone = _build_backbone('mmpretrain', arch, config)
    # What mmengine's ``Pretrained`` init with prefix "backbone." reads.
    state_dict = _load_checkpoint_with_prefix('backbone.', path, 'cpu')
    resize_vit_pos_embed(state_dict, backbone)
    allowed_missing, allowed_unexpected = mmpretrain_vit_allowed_keys(
        backbone)
    report = account_keys(backbone.state_dict(), state_dict)
    check_key_report(report, allowed_missing, allowed_unexpected,
                     'VisionTransformer')
    return 'VisionTransformer', report, allowed_missing, allowed_unexpected




def convert_checkpoint(src: str,
                       dst: str,
                       consumer: str,
                       source: str = 'student',
                       config: Optional[str] = None) -> ConversionResult:
    """Extract, convert, save and check an encoder for one consumer.

    Args:
        src (str): Input checkpoint (EHM, encoder-only or official MAE).
        dst (str): Output path; parent folders are created.
        consumer (str): One of :data:`CONSUMERS`.
        source (str): ``'student'`` or ``'teacher'`` encoder of an EHM
            checkpoint. Defaults to ``'student'``.
        config (str, optional): Downstream config whose ``model.backbone``
            the written file is checked against; by default a backbone
            with the checkpoint's own shape. Defaults to None.

    Returns:
        ConversionResult: Counts and the consumer's key report.

    Raises:
        StackError: If the consumer's check needs mmseg / mmdet and this
            environment lacks them (see :func:`require_consumer_stack`).
        FileNotFoundError: If ``src`` or ``config`` does not exist.
        ValueError: If the checkpoint is not a ViT encoder, its shape is
            vouched for neither by its metadata nor by a named architecture
            (without ``config``), or the consumer would not load it
            completely. ``dst`` is then left as it was.
    """
    if consumer not in CONSUMERS:
        raise ValueError(
            f'consumer must be one of {sorted(CONSUMERS)}, got {consumer!r}.')
    require_consumer_stack(consumer)
    if not osp.isfile(src):
        raise FileNotFoundError(f'checkpoint {src} does not exist.')
    from mmengine.runner.checkpoint import CheckpointLoader
    loaded = CheckpointLoader.load_checkpoint(src, map_location='cpu')
    encoder = extract_encoder(loaded, source, drop_mask_token=True)
    arch = infer_vit_arch(encoder.state_dict)
    declared = declared_vit_arch(loaded)
    if config is None or declared is not None:
        # Without a config to check against, the shape read from the keys
        # must be vouched for (a lost final block looks like a shallower
        # encoder).
        check_vit_arch(arch, declared)
    meta = dict(
        converted_by=f'ehm_mm.downstream.converters ({consumer})',
        source_checkpoint=osp.basename(src),
        encoder=source,
        source_format=encoder.source_format,
        encoder_arch={key: arch[key]
                      for key in ARCH_KEYS},
        dropped={group: len(keys)
                 for group, keys in encoder.dropped.items()})
    checkpoint = to_consumer_checkpoint(encoder, consumer, meta)
    body: Mapping[str, Tensor] = checkpoint.get('state_dict',
                                                checkpoint.get('model'))
    # Written under a temporary name and renamed only when the consumer
    # took it: a failed conversion leaves an existing dst as it was.
    with atomic_path(dst) as tmp:
        torch.save(checkpoint, tmp)
        if consumer == 'mmpretrain':
            check = _check_mmpretrain(tmp, arch, config)
        else:
            check = _check_accounted(consumer, tmp, arch, config)
    checked_by, report, allowed_missing, allowed_unexpected = check
    return ConversionResult(
        encoder=encoder,
        num_written=len(body),
        consumer=consumer,
        checked_by=checked_by,
        report=report,
        allowed_missing=tuple(allowed_missing),
        allowed_unexpected=tuple(allowed_unexpected))


#: What each converter script is for, the first line of its ``--help``.
CONVERTER_TITLES: Dict[str, str] = {
    'mmpretrain': 'mmpretrain fine-tuning / linear probing',
    'mmseg': 'mmsegmentation (UPerNet ViT on ADE20K)',
    'timm': 'the official-MAE / timm layout (ViTDet)',
}

_CONVERTER_HELP = """Convert an EHM checkpoint for {title}.

Extracts the student encoder of an EHM checkpoint (or the EMA teacher with
--source teacher), drops the decoder, mask token, head and the other encoder
copy, writes the {consumer} layout ({layout}) and loads the result into the
consumer's backbone, printing the loaded / missing / unexpected counts. The
command fails (and writes nothing) if any key is unaccounted for.

Example:
    python tools/model_converters/ehm2{consumer}.py \\
        work_dirs/ehm_pretrain/epoch_300.pth \\
        pretrain/ehm_vit-base-p16_{consumer}.pth
"""


def converter_main(consumer: str,
                   argv: Optional[List[str]] = None) -> ConversionResult:
    """The command line of ``tools/model_converters/ehm2<consumer>.py``.

    ``SRC DST [--source student|teacher] [--config CFG]``: converts with
    :func:`convert_checkpoint` and prints the key accounting.

    Args:
        consumer (str): The target layout, a key of :data:`CONSUMERS`.
        argv (List[str], optional): Arguments; None means ``sys.argv``.
            Defaults to None.

    Returns:
        ConversionResult: What was kept, dropped and loaded.
    """
    import argparse
    parser = argparse.ArgumentParser(
        description=_CONVERTER_HELP.format(
            title=CONVERTER_TITLES[consumer],
            consumer=consumer,
            layout=CONSUMERS[consumer]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='EHM (or MAE) checkpoint to convert')
    parser.add_argument('dst', help='where to write the converted weights')
    parser.add_argument(
        '--source',
        choices=['student', 'teacher'],
        default='student',
        help='encoder of the EHM checkpoint to export (default: student)')
    parser.add_argument(
        '--config',
        help='downstream config to check the weights against (default: a '
        'backbone with the shape of the checkpoint)')
    args = parser.parse_args(argv)
    result = convert_checkpoint(
        args.src,
        args.dst,
        consumer=consumer,
        source=args.source,
        config=args.config)
    for line in result.lines():
        print(line)
    print(f'saved to {args.dst}')
    return result
