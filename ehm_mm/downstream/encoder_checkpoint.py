# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Pull a pretrained ViT encoder out of a checkpoint, in one key layout.

Every downstream consumer in this project starts from the same *canonical*
encoder state dict: the key layout of mmpretrain's ``MAEViT`` without any
prefix (``cls_token``, ``pos_embed``, ``patch_embed.projection.*``,
``layers.N.{ln1,attn.qkv,attn.proj,ln2,ffn.layers.0.0,ffn.layers.1}.*`` and
the final norm ``ln1.*``). :func:`extract_encoder` produces it from

- an EHM (or any mmpretrain self-supervised / classifier) checkpoint: the
  student encoder under ``backbone.*`` or the EMA teacher under
  ``teacher.module.*``; the decoder (``neck.*``, including
  ``neck.mask_token``), ``head.*`` and the other encoder copy are dropped
  and counted;
- an encoder-only checkpoint in the same layout (what
  ``tools/model_converters/ehm2mmseg.py`` writes);
- an official-MAE / timm checkpoint (``{'model': {...}}`` with
  ``blocks.N.*`` keys, what ``tools/model_converters/ehm2timm.py`` writes).

:func:`mmpretrain_to_timm` and :func:`timm_to_mmpretrain` translate between
the canonical layout and the official-MAE / timm layout; both refuse any key
they do not know instead of dropping it.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

from torch import Tensor

#: Where each encoder copy lives in an EHM checkpoint's ``state_dict``.
ENCODER_PREFIXES: Dict[str, str] = {
    'student': 'backbone.',
    'teacher': 'teacher.module.',
}

# (canonical mmpretrain pattern, official-MAE / timm replacement) and back.
# Every pattern matches a whole key, so an unknown key never slips through.
_TO_TIMM: List[Tuple[str, str]] = [
    (r'cls_token', 'cls_token'),
    (r'pos_embed', 'pos_embed'),
    (r'patch_embed\.projection\.(weight|bias)', r'patch_embed.proj.\1'),
    (r'layers\.(\d+)\.ln1\.(weight|bias)', r'blocks.\1.norm1.\2'),
    (r'layers\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)',
     r'blocks.\1.attn.\2.\3'),
    (r'layers\.(\d+)\.ln2\.(weight|bias)', r'blocks.\1.norm2.\2'),
    (r'layers\.(\d+)\.ffn\.layers\.0\.0\.(weight|bias)',
     r'blocks.\1.mlp.fc1.\2'),
    (r'layers\.(\d+)\.ffn\.layers\.1\.(weight|bias)', r'blocks.\1.mlp.fc2.\2'),
    (r'ln1\.(weight|bias)', r'norm.\1'),
]
_TO_MMPRETRAIN: List[Tuple[str, str]] = [
    (r'cls_token', 'cls_token'),
    (r'pos_embed', 'pos_embed'),
    (r'patch_embed\.proj\.(weight|bias)', r'patch_embed.projection.\1'),
    (r'blocks\.(\d+)\.norm1\.(weight|bias)', r'layers.\1.ln1.\2'),
    (r'blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)',
     r'layers.\1.attn.\2.\3'),
    (r'blocks\.(\d+)\.norm2\.(weight|bias)', r'layers.\1.ln2.\2'),
    (r'blocks\.(\d+)\.mlp\.fc1\.(weight|bias)',
     r'layers.\1.ffn.layers.0.0.\2'),
    (r'blocks\.(\d+)\.mlp\.fc2\.(weight|bias)', r'layers.\1.ffn.layers.1.\2'),
    (r'norm\.(weight|bias)', r'ln1.\1'),
]


@dataclass
class ExtractedEncoder:
    """An encoder state dict and what was left behind to get it.

    Args:
        state_dict (OrderedDict[str, Tensor]): The encoder weights in the
            canonical (mmpretrain ``MAEViT``) key layout, without prefix.
        source_format (str): What the checkpoint was: ``'ehm'`` (prefixed
            model state dict), ``'encoder'`` (canonical layout, no prefix)
            or ``'timm'`` (official MAE / timm layout).
        dropped (dict[str, list[str]]): Keys of the checkpoint that are not
            the chosen encoder, grouped by their first name component
            (``'neck'``, ``'head'``, ``'teacher'``, ...). Defaults to {}.
    """

    state_dict: 'OrderedDict[str, Tensor]'
    source_format: str
    dropped: Dict[str, List[str]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: how many encoder keys were kept and what was dropped.

        Returns:
            str: e.g. ``'kept 52 encoder keys; dropped neck: 30, teacher:
            53'``.
        """
        dropped = ', '.join(f'{group}: {len(keys)}'
                            for group, keys in sorted(self.dropped.items()))
        return (f'kept {len(self.state_dict)} encoder keys '
                f'({self.source_format} checkpoint); '
                f'dropped {dropped or "nothing"}')


def _rename(state_dict: Mapping[str, Tensor], rules: List[Tuple[str, str]],
            target: str) -> 'OrderedDict[str, Tensor]':
    """Rename every key with the first rule that matches all of it."""
    renamed: 'OrderedDict[str, Tensor]' = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            if re.fullmatch(pattern, key):
                renamed[re.sub(f'^{pattern}$', replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f'Cannot map {len(unknown)} key(s) to the {target} layout, '
            f'they are not ViT encoder weights: {unknown[:10]}')
    return renamed


def mmpretrain_to_timm(
        state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Rename a canonical encoder state dict to official-MAE / timm keys.

    ``layers.N.ln1`` -> ``blocks.N.norm1``, ``ffn.layers.0.0`` ->
    ``mlp.fc1``, ``patch_embed.projection`` -> ``patch_embed.proj``, final
    ``ln1`` -> ``norm``; tensors are shared, not copied.

    Args:
        state_dict (Mapping[str, Tensor]): Encoder weights in the canonical
            layout (no prefix).

    Returns:
        OrderedDict[str, Tensor]: The same tensors under timm names.

    Raises:
        ValueError: If a key is not a plain ViT encoder weight.
    """
    return _rename(state_dict, _TO_TIMM, 'official-MAE/timm')


def timm_to_mmpretrain(
        state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """Rename official-MAE / timm encoder keys to the canonical layout.

    The inverse of :func:`mmpretrain_to_timm`.

    Args:
        state_dict (Mapping[str, Tensor]): Encoder weights with timm names.

    Returns:
        OrderedDict[str, Tensor]: The same tensors under mmpretrain names.

    Raises:
        ValueError: If a key is not a plain ViT encoder weight (e.g. the
            ``head`` or ``fc_norm`` of a fine-tuned checkpoint).
    """
    return _rename(state_dict, _TO_MMPRETRAIN, 'mmpretrain')


def _model_state_dict(checkpoint: Mapping) -> Tuple[Mapping, bool]:
    """Find the weights in a checkpoint; also say whether they are timm."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError('A checkpoint must be a dict, '
                        f'got {type(checkpoint).__name__}.')
    if 'state_dict' in checkpoint:
        return checkpoint['state_dict'], False
    if 'model' in checkpoint:
        return checkpoint['model'], True
    if checkpoint and all(
            isinstance(value, Tensor) for value in checkpoint.values()):
        return checkpoint, False
    raise ValueError('The checkpoint has neither a "state_dict" nor a '
                     '"model" entry, nor is it a plain state dict; '
                     f'its top-level keys are {list(checkpoint)[:10]}.')


def _group(key: str) -> str:
    return key.split('.', 1)[0]


def extract_encoder(checkpoint: Mapping,
                    source: str = 'student') -> ExtractedEncoder:
    """Return the ViT encoder of a checkpoint in the canonical layout.

    Args:
        checkpoint (Mapping): A loaded checkpoint (mmengine dict with
            ``state_dict``, official-MAE dict with ``model``, or a plain
            state dict).
        source (str): Which encoder of an EHM checkpoint to take:
            ``'student'`` (``backbone.*``, what MAE papers transfer) or
            ``'teacher'`` (the EMA copy under ``teacher.module.*``).
            Defaults to ``'student'``.

    Returns:
        ExtractedEncoder: The encoder weights and the dropped keys.

    Raises:
        ValueError: If ``source`` is unknown, the checkpoint holds no such
            encoder, or its keys are in no known layout.
    """
    if source not in ENCODER_PREFIXES:
        raise ValueError(f'source must be one of {sorted(ENCODER_PREFIXES)}, '
                         f'got {source!r}.')
    state_dict, is_timm = _model_state_dict(checkpoint)
    keys = list(state_dict)
    prefixed = any(
        key.startswith(prefix) for key in keys
        for prefix in ENCODER_PREFIXES.values())

    if prefixed:
        prefix = ENCODER_PREFIXES[source]
        encoder: 'OrderedDict[str, Tensor]' = OrderedDict()
        dropped: Dict[str, List[str]] = {}
        for key in keys:
            if key.startswith(prefix):
                encoder[key[len(prefix):]] = state_dict[key]
            else:
                dropped.setdefault(_group(key), []).append(key)
        if not encoder:
            raise ValueError(
                f'The checkpoint has no {source} encoder: no key starts with '
                f'{prefix!r}. Groups present: {sorted(dropped)}.')
        return ExtractedEncoder(encoder, 'ehm', dropped)

    if source != 'student':
        raise ValueError(
            f'source={source!r} needs an EHM checkpoint with an EMA teacher '
            '(teacher.module.* keys); this one holds a single encoder.')
    if is_timm or any(key.startswith('blocks.') for key in keys):
        return ExtractedEncoder(timm_to_mmpretrain(state_dict), 'timm')
    if any(key.startswith('layers.') for key in keys):
        return ExtractedEncoder(OrderedDict(state_dict), 'encoder')
    raise ValueError(
        'Unrecognised checkpoint layout: expected backbone.* / '
        'teacher.module.* (EHM), layers.* (mmpretrain encoder) or blocks.* '
        f'(official MAE / timm) keys, got {keys[:10]}.')


def load_encoder(filename: str,
                 source: str = 'student',
                 map_location: str = 'cpu') -> ExtractedEncoder:
    """Load a checkpoint file (or URL) and extract its encoder.

    Args:
        filename (str): Local path or any URI mmengine's
            ``CheckpointLoader`` accepts.
        source (str): ``'student'`` or ``'teacher'``, see
            :func:`extract_encoder`. Defaults to ``'student'``.
        map_location (str): Where to put the tensors. Defaults to ``'cpu'``.

    Returns:
        ExtractedEncoder: The canonical encoder and the dropped keys.

    Raises:
        FileNotFoundError: If a local ``filename`` does not exist.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    checkpoint = CheckpointLoader.load_checkpoint(
        filename, map_location=map_location)
    return extract_encoder(checkpoint, source)


def infer_vit_arch(state_dict: Mapping[str, Tensor]) -> Dict[str, int]:
    """Read the ViT shape from a canonical encoder state dict.

    Args:
        state_dict (Mapping[str, Tensor]): Canonical encoder weights.

    Returns:
        dict: ``embed_dims``, ``num_layers``, ``feedforward_channels``,
        ``patch_size``, ``in_channels`` and ``img_size`` (the square input
        the position embedding was trained for).

    Raises:
        ValueError: If a weight needed to infer the shape is missing.
    """
    needed = ('pos_embed', 'patch_embed.projection.weight',
              'layers.0.ffn.layers.0.0.weight')
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise ValueError(f'Cannot infer the ViT shape: missing {missing}.')
    proj = state_dict['patch_embed.projection.weight']
    embed_dims, in_channels, patch_size = proj.shape[:3]
    num_layers = 1 + max(
        int(key.split('.')[1]) for key in state_dict
        if key.startswith('layers.'))
    num_tokens = state_dict['pos_embed'].shape[1]
    grid = int(round((num_tokens - 1)**0.5))
    if grid * grid != num_tokens - 1:
        grid = int(round(num_tokens**0.5))  # no CLS position
    return dict(
        embed_dims=int(embed_dims),
        num_layers=num_layers,
        feedforward_channels=int(
            state_dict['layers.0.ffn.layers.0.0.weight'].shape[0]),
        patch_size=int(patch_size),
        in_channels=int(in_channels),
        img_size=grid * int(patch_size))
