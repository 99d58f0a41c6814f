# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Load a pretrained ViT encoder from an EHM / MAE checkpoint, strictly.

An EHM (or mmpretrain MAE) checkpoint is an mmengine checkpoint whose
``state_dict`` holds the student encoder as ``backbone.*``, the decoder as
``neck.*`` / ``head.*`` and, for EHM, the EMA teacher encoder as
``teacher.module.*``. A plain encoder state dict (keys without prefix) is
accepted too. Every encoder key must be found and every key under the chosen
prefix must be used: anything else is an error, not a warning.
"""
from typing import Dict, Mapping, Union

from mmengine.runner import CheckpointLoader
from torch import Tensor, nn

#: Where each encoder copy lives in an EHM checkpoint's state dict.
ENCODER_PREFIXES = {'student': 'backbone.', 'teacher': 'teacher.module.'}


def _state_dict_of(checkpoint: Mapping) -> Mapping[str, Tensor]:
    """Return the state dict inside an mmengine checkpoint (or itself)."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, Mapping):
        raise TypeError('checkpoint state_dict must be a mapping, got '
                        f'{type(state_dict).__name__}')
    # Strip the DistributedDataParallel wrapper prefix, if any.
    if state_dict and all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return state_dict


def select_encoder_state_dict(checkpoint: Mapping,
                              weights: str = 'student') -> Dict[str, Tensor]:
    """Pick the encoder weights out of a checkpoint and strip their prefix.

    Args:
        checkpoint (Mapping): A loaded checkpoint: a dict with a
            ``state_dict`` entry or a state dict itself.
        weights (str): ``'student'`` (``backbone.*``; a checkpoint without
            any ``backbone.*`` key is taken as a plain encoder state dict) or
            ``'teacher'`` (``teacher.module.*``). Defaults to ``'student'``.

    Returns:
        dict[str, Tensor]: Encoder weights with encoder-relative keys.
    """
    if weights not in ENCODER_PREFIXES:
        raise ValueError(f'weights must be one of {list(ENCODER_PREFIXES)}, '
                         f'got {weights!r}')
    state_dict = _state_dict_of(checkpoint)
    prefix = ENCODER_PREFIXES[weights]
    selected = {
        k[len(prefix):]: v
        for k, v in state_dict.items() if k.startswith(prefix)
    }
    if selected:
        return selected
    if weights == 'student' and not any(
            k.startswith(p) for k in state_dict
            for p in ENCODER_PREFIXES.values()):
        return dict(state_dict)
    found = sorted({k.split('.')[0] + '.' for k in state_dict})
    raise ValueError(f"checkpoint has no '{prefix}*' keys for the {weights} "
                     f'encoder; top-level prefixes found: {found}')


def load_encoder_weights(encoder: nn.Module,
                         checkpoint: Union[str, Mapping],
                         weights: str = 'student',
                         map_location: str = 'cpu') -> Dict[str, Tensor]:
    """Load encoder weights with exact key accounting.

    Position embeddings of another grid size are resized by mmpretrain's
    ``VisionTransformer`` load hook; any other shape mismatch is an error.

    Args:
        encoder (nn.Module): The encoder (e.g. an mmpretrain
            ``VisionTransformer``) to load into.
        checkpoint (str | Mapping): A checkpoint path / URL (read with
            mmengine's ``CheckpointLoader``) or an already loaded checkpoint.
        weights (str): ``'student'`` or ``'teacher'``, see
            :func:`select_encoder_state_dict`. Defaults to ``'student'``.
        map_location (str): Where to map the tensors when reading a file.
            Defaults to ``'cpu'``.

    Returns:
        dict[str, Tensor]: The state dict that was loaded.
    """
    source = checkpoint if isinstance(checkpoint, str) else 'the checkpoint'
    if isinstance(checkpoint, str):
        checkpoint = CheckpointLoader.load_checkpoint(
            checkpoint, map_location=map_location)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f'{source} does not hold a dict, got '
                        f'{type(checkpoint).__name__}')
    state_dict = select_encoder_state_dict(checkpoint, weights)
    expected = set(encoder.state_dict().keys())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(
            f'{weights} encoder weights in {source} do not match the '
            f'{type(encoder).__name__} built from the config '
            f'(check arch / patch_size): missing keys {missing}, '
            f'unexpected keys {unexpected}')
    try:
        encoder.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ValueError(f'cannot load the {weights} encoder weights of '
                         f'{source}: {error}') from error
    return state_dict

