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
  and counted (the converters also drop EHM-SimMIM's encoder
  ``mask_token``, see ``drop_mask_token``);
- an encoder-only checkpoint in the same layout (what
  ``tools/model_converters/ehm2mmseg.py`` writes);
- an official-MAE / timm checkpoint (``{'model': {...}}`` with
  ``blocks.N.*`` keys, what ``tools/model_converters/ehm2timm.py`` writes).

A ``module.`` prefix left by ``DistributedDataParallel`` is stripped first.

:func:`mmpretrain_to_timm` and :func:`timm_to_mmpretrain` translate between
the canonical layout and the official-MAE / timm layout; both refuse any key
they do not know instead of dropping it. :func:`load_encoder_weights` loads
the encoder into an mmpretrain ViT with every key accounted for (the
retrieval benchmarks use it); the downstream backbones load through
:class:`~ehm_mm.downstream.accounted_pretrained.AccountedPretrainedMixin`
and the converters through :func:`load_encoder`. This is the only module
that reads encoder weights out of a checkpoint.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, MutableMapping, Optional, Tuple, Union

from torch import Tensor, nn

from .key_accounting import KeyReport, load_state_dict_accounted

__all__ = [
    'ENCODER_PREFIXES', 'ExtractedEncoder', 'extract_encoder',
    'infer_vit_arch', 'count_vit_blocks', 'declared_vit_arch',
    'check_vit_arch', 'known_vit_archs', 'load_encoder',
    'load_encoder_weights',
    'mmpretrain_to_timm', 'resize_vit_pos_embed', 'timm_to_mmpretrain'
]

#: Where each encoder copy lives in an EHM checkpoint's ``state_dict``.
ENCODER_PREFIXES: Dict[str, str] = {
    'student': 'backbone.',
    'teacher': 'teacher.module.',
}

# The same weight under its canonical (mmpretrain) and official-MAE / timm
# name; {n} stands for a block index, {p} for weight / bias. Every rule
# matches a whole key, so an unknown key never slips through.
_KEY_PAIRS: List[Tuple[str, str]] = [
    ('cls_token', 'cls_token'),
    ('pos_embed', 'pos_embed'),
    ('patch_embed.projection.{p}', 'patch_embed.proj.{p}'),
    ('layers.{n}.ln1.{p}', 'blocks.{n}.norm1.{p}'),
    ('layers.{n}.attn.qkv.{p}', 'blocks.{n}.attn.qkv.{p}'),
    ('layers.{n}.attn.proj.{p}', 'blocks.{n}.attn.proj.{p}'),
    ('layers.{n}.ln2.{p}', 'blocks.{n}.norm2.{p}'),
    ('layers.{n}.ffn.layers.0.0.{p}', 'blocks.{n}.mlp.fc1.{p}'),
    ('layers.{n}.ffn.layers.1.{p}', 'blocks.{n}.mlp.fc2.{p}'),
    ('ln1.{p}', 'norm.{p}'),
]


def _rename_rules(to_timm: bool) -> List[Tuple[str, str]]:
    """``(whole-key pattern, replacement)`` rules for one direction."""
    rules = []
    for mmpretrain_name, timm_name in _KEY_PAIRS:
        source, target = ((mmpretrain_name, timm_name) if to_timm else
                          (timm_name, mmpretrain_name))
        pattern = re.escape(source).replace(r'\{n\}', r'(?P<n>\d+)').replace(
            r'\{p\}', r'(?P<p>weight|bias)')
        rules.append((pattern, target.replace('{n}', r'\g<n>').replace(
            '{p}', r'\g<p>')))
    return rules


_TO_TIMM = _rename_rules(to_timm=True)
_TO_MMPRETRAIN = _rename_rules(to_timm=False)


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


def _strip_ddp_prefix(state_dict: Mapping) -> Mapping:
    """Drop the ``module.`` prefix ``DistributedDataParallel`` adds."""
    if not isinstance(state_dict, Mapping):
        raise TypeError('The checkpoint weights must be a dict, got '
                        f'{type(state_dict).__name__}.')
    if state_dict and all(key.startswith('module.') for key in state_dict):
        return {key[len('module.'):]: v for key, v in state_dict.items()}
    return state_dict


def _model_state_dict(checkpoint: Mapping) -> Tuple[Mapping, bool]:
    """Find the weights in a checkpoint; also say whether they are timm."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError('A checkpoint must be a dict, '
                        f'got {type(checkpoint).__name__}.')
    if 'state_dict' in checkpoint:
        return _strip_ddp_prefix(checkpoint['state_dict']), False
    if 'model' in checkpoint:
        return _strip_ddp_prefix(checkpoint['model']), True
    if checkpoint and all(
            isinstance(value, Tensor) for value in checkpoint.values()):
        return _strip_ddp_prefix(checkpoint), False
    raise ValueError('The checkpoint has neither a "state_dict" nor a '
                     '"model" entry, nor is it a plain state dict; '
                     f'its top-level keys are {list(checkpoint)[:10]}.')


def _group(key: str) -> str:
    return key.split('.', 1)[0]


def extract_encoder(checkpoint: Mapping,
                    source: str = 'student',
                    drop_mask_token: bool = False) -> ExtractedEncoder:
    """Return the ViT encoder of a checkpoint in the canonical layout.

    Args:
        checkpoint (Mapping): A loaded checkpoint (mmengine dict with
            ``state_dict``, official-MAE dict with ``model``, or a plain
            state dict).
        source (str): Which encoder of an EHM checkpoint to take:
            ``'student'`` (``backbone.*``, what MAE papers transfer) or
            ``'teacher'`` (the EMA copy under ``teacher.module.*``).
            Defaults to ``'student'``.
        drop_mask_token (bool): Drop (and count under ``mask_token``) the
            encoder's own ``mask_token`` of an EHM checkpoint, which
            EHM-SimMIM's ViT (``MaskFeatViT``) keeps in the encoder and a
            downstream ViT has no use for (the converters do; a fine-tuning
            load keeps it and reports it unused). Defaults to False.

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
        if drop_mask_token and 'mask_token' in encoder:
            # EHM-SimMIM's ViT (MaskFeatViT) keeps its mask token in the
            # encoder; a downstream ViT sees no masked patch and has none.
            del encoder['mask_token']
            dropped.setdefault('mask_token', []).append(prefix + 'mask_token')
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


def resize_vit_pos_embed(state_dict: MutableMapping[str, Tensor],
                         vit: nn.Module) -> None:
    """Resize ``state_dict['pos_embed']`` in place to an mmpretrain ViT's grid.

    Uses mmpretrain's ``resize_pos_embed`` with the ViT's own
    ``patch_resolution``, ``interpolate_mode`` and ``num_extra_tokens``, as
    its load hook would; nothing happens when the shapes already agree or
    either side has no ``pos_embed``.

    Args:
        state_dict (MutableMapping[str, Tensor]): Canonical encoder weights.
        vit (nn.Module): An mmpretrain ``VisionTransformer`` (or subclass).
    """
    pos_embed = state_dict.get('pos_embed')
    target = getattr(vit, 'pos_embed', None)
    if pos_embed is None or target is None or pos_embed.shape == target.shape:
        return
    from mmpretrain.models.utils import resize_pos_embed
    extra = int(getattr(vit, 'num_extra_tokens', 1))
    grid = int(round((pos_embed.shape[1] - extra)**0.5))
    if grid * grid != pos_embed.shape[1] - extra:
        raise ValueError(
            f'pos_embed with {pos_embed.shape[1]} tokens is not a square '
            f'patch grid plus {extra} extra token(s).')
    state_dict['pos_embed'] = resize_pos_embed(pos_embed, (grid, grid),
                                               vit.patch_resolution,
                                               vit.interpolate_mode, extra)


def load_encoder_weights(encoder: nn.Module,
                         checkpoint: Union[str, Mapping],
                         weights: str = 'student',
                         map_location: str = 'cpu') -> KeyReport:
    """Load a checkpoint's encoder into an mmpretrain ViT, every key used.

    The checkpoint is read with :func:`load_encoder` (or
    :func:`extract_encoder` when already loaded); its position embedding is
    resized to the encoder's grid; then every encoder weight must be found
    and every extracted weight used (:func:`load_state_dict_accounted`
    without allowed exceptions). Nothing is loaded when that fails.

    Args:
        encoder (nn.Module): An mmpretrain ``VisionTransformer`` / ``MAEViT``
            (the canonical key layout).
        checkpoint (str | Mapping): A checkpoint path / URL or an already
            loaded checkpoint.
        weights (str): ``'student'`` or ``'teacher'``, see
            :func:`extract_encoder`. Defaults to ``'student'``.
        map_location (str): Where to map the tensors of a file. Defaults to
            ``'cpu'``.

    Returns:
        KeyReport: The (complete) key accounting of the load.

    Raises:
        ValueError: If the checkpoint holds no such encoder or a key is
            missing, unexpected or of another shape.
    """
    if isinstance(checkpoint, str):
        extracted = load_encoder(checkpoint, weights, map_location)
        source = checkpoint
    else:
        extracted = extract_encoder(checkpoint, weights)
        source = 'the checkpoint'
    state_dict = dict(extracted.state_dict)
    resize_vit_pos_embed(state_dict, encoder)
    return load_state_dict_accounted(
        encoder,
        state_dict,
        what=f'{type(encoder).__name__} ({weights} encoder of {source})')


def infer_vit_arch(state_dict: Mapping[str, Tensor]) -> Dict[str, int]:
    """Read the ViT shape from a canonical encoder state dict.

    Args:
        state_dict (Mapping[str, Tensor]): Canonical encoder weights.

    Returns:
        dict: ``embed_dims``, ``num_layers``, ``feedforward_channels``,
        ``patch_size``, ``in_channels`` and ``img_size`` (the square input
        the position embedding was trained for).

    Raises:
        ValueError: If a weight needed to infer the shape is missing, or
            the blocks are not ``0 .. n-1``, each with the same weights
            (:func:`count_vit_blocks`).
    """
    num_layers = count_vit_blocks(state_dict)
    needed = ('pos_embed', 'patch_embed.projection.weight',
              'layers.0.ffn.layers.0.0.weight')
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise ValueError(f'Cannot infer the ViT shape: missing {missing}.')
    proj = state_dict['patch_embed.projection.weight']
    embed_dims, in_channels, patch_size = proj.shape[:3]
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


#: The ViT shape entries a checkpoint's architecture is compared on.
ARCH_KEYS = ('embed_dims', 'num_layers', 'feedforward_channels')


def count_vit_blocks(state_dict: Mapping[str, Tensor]) -> int:
    """Count the transformer blocks ``layers.N.*``; they must be complete.

    Args:
        state_dict (Mapping[str, Tensor]): Canonical encoder weights.

    Returns:
        int: The number of blocks n.

    Raises:
        ValueError: If there is no block, an index in ``0 .. n-1`` is
            absent, or a block lacks weights that block 0 has (or has more).
    """
    blocks: Dict[int, set] = {}
    for key in state_dict:
        if key.startswith('layers.'):
            _, index, rest = key.split('.', 2)
            blocks.setdefault(int(index), set()).add(rest)
    if not blocks:
        raise ValueError('The encoder has no transformer block (layers.N.*).')
    num_layers = max(blocks) + 1
    absent = [i for i in range(num_layers) if i not in blocks]
    if absent:
        raise ValueError(
            f'The encoder has blocks up to layers.{num_layers - 1} but not '
            f'layers.{absent}: the checkpoint is incomplete.')
    reference = blocks[0]
    for index in range(1, num_layers):
        if blocks[index] != reference:
            lacking = sorted(reference - blocks[index])
            extra = sorted(blocks[index] - reference)
            raise ValueError(
                f'Block layers.{index} differs from layers.0: lacks '
                f'{lacking}, has in addition {extra}.')
    return num_layers


def known_vit_archs() -> Dict[str, Dict[str, int]]:
    """The ViT shapes mmpretrain's ``VisionTransformer`` knows by name.

    Returns:
        dict: Arch name (``'b'``, ``'base'``, ...) to ``embed_dims``,
        ``num_layers`` and ``feedforward_channels``.
    """
    from mmpretrain.models import VisionTransformer
    return {
        name: {key: int(arch[key])
               for key in ARCH_KEYS}
        for name, arch in VisionTransformer.arch_zoo.items()
        if all(key in arch for key in ARCH_KEYS)
    }


def _balanced(text: str, start: int) -> str:
    """The text inside the parenthesis opened at ``text[start - 1]``."""
    depth = 1
    for end in range(start, len(text)):
        depth += {'(': 1, ')': -1}.get(text[end], 0)
        if depth == 0:
            return text[start:end]
    return text[start:]


def declared_vit_arch(checkpoint: Mapping) -> Optional[Dict[str, int]]:
    """The encoder shape a checkpoint's own metadata states, if any.

    Read from ``meta['encoder_arch']`` (written by this project's
    converters) or from the backbone ``arch`` of the config text mmengine's
    runner saves in ``meta['cfg']`` (an arch name or a dict). The text is
    searched, never executed.

    Args:
        checkpoint (Mapping): A loaded checkpoint.

    Returns:
        dict | None: ``embed_dims``, ``num_layers`` and
        ``feedforward_channels``, or None when the metadata names none.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    if not isinstance(meta, Mapping):
        return None
    declared = meta.get('encoder_arch')
    if isinstance(declared, Mapping) and all(k in declared
                                             for k in ARCH_KEYS):
        return {key: int(declared[key]) for key in ARCH_KEYS}
    text = meta.get('cfg')
    if not isinstance(text, str):
        return None
    # The top-level ``model = dict(...)`` (other variables may hold model
    # pieces too), then its ``backbone=dict(...)``.
    found = re.search(r'^model\s*=\s*dict\(', text, re.MULTILINE)
    if found is None:
        return None
    model = _balanced(text, found.end())
    found = re.search(r'\bbackbone\s*=\s*dict\(', model)
    if found is None:
        return None
    backbone = _balanced(model, found.end())
    by_name = re.search(r"\barch\s*=\s*['\"]([\w-]+)['\"]", backbone)
    if by_name is not None:
        return known_vit_archs().get(by_name.group(1).lower())
    by_dict = re.search(r'\barch\s*=\s*dict\(', backbone)
    if by_dict is None:
        return None
    fields = dict(
        re.findall(r'(\w+)\s*=\s*(\d+)', _balanced(backbone, by_dict.end())))
    if not all(key in fields for key in ARCH_KEYS):
        return None
    return {key: int(fields[key]) for key in ARCH_KEYS}


def check_vit_arch(arch: Mapping[str, int],
                   declared: Optional[Mapping[str, int]] = None) -> str:
    """Accept an inferred encoder shape only if something vouches for it.

    A shape read from the keys cannot tell a complete 10-block encoder from
    a 12-block one that lost its last blocks. It must equal the shape the
    checkpoint's metadata declares (:func:`declared_vit_arch`), or, without
    metadata, one of mmpretrain's named architectures.

    Args:
        arch (Mapping[str, int]): From :func:`infer_vit_arch`.
        declared (Mapping[str, int], optional): From
            :func:`declared_vit_arch`. Defaults to None.

    Returns:
        str: What vouched for the shape, for the log.

    Raises:
        ValueError: When the shape contradicts the metadata, or there is no
            metadata and no named architecture has this shape.
    """
    shape = {key: int(arch[key]) for key in ARCH_KEYS}
    if declared is not None:
        if dict(declared) != shape:
            raise ValueError(
                f'The checkpoint holds an encoder of shape {shape}, but its '
                f'metadata declares {dict(declared)}: blocks or weights are '
                'missing. Re-export the checkpoint.')
        return 'the checkpoint metadata'
    names = sorted(name for name, known in known_vit_archs().items()
                   if known == shape)
    if not names:
        raise ValueError(
            f'The encoder has shape {shape}, which is no named mmpretrain '
            'ViT, and the checkpoint has no metadata (meta.cfg or '
            'meta.encoder_arch) stating its shape, so missing final blocks '
            'could not be told apart; pass --config with the backbone to '
            'check against.')
    return f'mmpretrain arch {names[0]!r}'
