# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Load local checkpoint files weights-only, with errors a user can act on.

mmengine reads every local checkpoint (``--resume``, ``load_from``,
``init_cfg=dict(type='Pretrained')``, ``CheckpointLoader``) with a plain
``torch.load``. A damaged file then fails with a bare ``EOFError`` (empty
file), a miniz message (truncated file), or torch's advice to retry with
``weights_only=False`` (random bytes, or a file holding Python objects) -
advice that would run whatever code the file carries.

:func:`load_local_checkpoint` loads with ``weights_only=True`` and turns
these failures into a :class:`CheckpointLoadError` naming the file, what is
wrong with it, and that weights-only loading must stay on.
:func:`register_checkpoint_loader` installs it as mmengine's loader for
local paths (``import ehm_mm`` does this), so every loading path of the
project goes through it.
"""
import os
import os.path as osp
import pickle
import struct
from typing import Any, Optional, Union

import torch

from .checkpoint_digest import verify_tensor_digests

#: Sentences of torch's messages that advise turning the safety check off.
_ADVICE_MARKERS = ('weights_only', 'safe_globals', 'trusted source',
                   'file an issue', 'Check the documentation',
                   'Weights only load failed')

#: Phrases of torch's errors about a damaged zip archive.
_DAMAGE_MARKERS = ('PytorchStreamReader', 'zip archive', 'corrupted',
                   'restore data location', 'record size',
                   'storage that is not resizable')

_KEEP_SAFE = ('Do not retry with weights_only=False: it would run any code '
              'the file carries. Re-create the file (or restore it from a '
              'backup) instead.')


class CheckpointLoadError(RuntimeError):
    """A checkpoint file is damaged or holds what weights-only loading
    refuses."""


# What torch's weights-only unpickler raises on bytes that are no pickle
# stream at all, besides UnpicklingError (measured on random files), and
# what the allow-listed numpy / codecs functions raise on forged arguments
# (measured by changing each byte of a checkpoint's pickle: e.g. an unknown
# dtype or encoding name, a string where numpy wants a number, a method
# name HistoryBuffer does not have).
_GARBAGE_ERRORS = (AttributeError, LookupError, ValueError, TypeError,
                   struct.error)


def _torch_reason(message: str) -> str:
    """The part of torch's message that says what is wrong, no advice."""
    kept = []
    for line in message.replace('WeightsUnpickler error:', '\n').split('\n'):
        line = line.split(' Please use ')[0].strip()
        if line and not any(m in line for m in _ADVICE_MARKERS):
            kept.append(line)
    return ' '.join(kept) or 'no reason given'


def describe_load_failure(filename: str, error: BaseException) -> str:
    """Say what is wrong with a checkpoint that ``torch.load`` rejected.

    Args:
        filename (str): The checkpoint path.
        error (BaseException): What ``torch.load(weights_only=True)``
            raised.

    Returns:
        str: A message naming the file and the problem, without advice to
        disable weights-only loading.
    """
    if isinstance(error, EOFError):
        what = 'ends before its data is complete (truncated)'
    elif isinstance(error, pickle.UnpicklingError):
        reason = _torch_reason(str(error))
        if any(m in reason for m in ('GLOBAL', 'global', 'object dtype')):
            what = ('holds Python objects that weights-only loading refuses '
                    f'({reason}); it may be crafted to run code')
        else:
            what = ('is not a PyTorch checkpoint, or is damaged '
                    f'({reason})')
    else:
        reason = _torch_reason(str(error)).split('. ')[0]
        what = f'is damaged or truncated ({type(error).__name__}: {reason})'
    return f'Checkpoint {filename} {what}. {_KEEP_SAFE}'


def load_local_checkpoint(filename: Union[str, os.PathLike],
                          map_location: Optional[Any] = None) -> Any:
    """``torch.load(filename, weights_only=True)`` with clear errors.

    Args:
        filename (str | PathLike): Local checkpoint path (``~`` expanded).
        map_location (Any, optional): As for ``torch.load``. Defaults to
            None.

    The sha256 of every tensor, when the checkpoint stores them
    (:mod:`~ehm_mm.utils.checkpoint_digest`), is verified, and the digests
    are removed from what is returned.

    Returns:
        Any: The loaded checkpoint.

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointLoadError: The file is empty, truncated, not a checkpoint,
            holds objects outside the weights-only allow-list (numpy
            object arrays included), or torch could not load it for
            another reason (e.g. ``map_location``), or a tensor does not
            match the sha256 stored at save time; the message names the
            file (and the tensors).
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if osp.getsize(filename) == 0:
        raise CheckpointLoadError(
            f'Checkpoint {filename} is empty (0 bytes), e.g. left by a save '
            f'that was interrupted. {_KEEP_SAFE}')
    try:
        checkpoint = torch.load(
            filename, map_location=map_location, weights_only=True)
    except (EOFError, pickle.UnpicklingError) as error:
        raise CheckpointLoadError(describe_load_failure(filename,
                                                        error)) from None
    except _GARBAGE_ERRORS as error:
        # Bytes that are not a pickle stream make the unpickler fail in
        # its own bookkeeping (an empty stack, an unknown memo key, a
        # string that is not UTF-8) rather than with UnpicklingError, and
        # forged arguments make numpy fail (an unknown dtype name).
        raise CheckpointLoadError(
            f'Checkpoint {filename} is not a PyTorch checkpoint, or is '
            f'damaged (the unpickler failed: {type(error).__name__}: '
            f'{error}). {_KEEP_SAFE}') from None
    except RuntimeError as error:
        if not any(m in str(error) for m in _DAMAGE_MARKERS):
            # e.g. a map_location problem, not necessarily the file's
            raise CheckpointLoadError(
                f'Checkpoint {filename} could not be loaded ('
                f'{type(error).__name__}: {_torch_reason(str(error))})'
            ) from error
        raise CheckpointLoadError(describe_load_failure(filename,
                                                        error)) from None
    try:
        verify_tensor_digests(checkpoint, filename)
    except ValueError as error:
        raise CheckpointLoadError(str(error)) from None
    return checkpoint


def register_checkpoint_loader() -> None:
    """Make :func:`load_local_checkpoint` mmengine's loader of local paths.

    ``mmengine.runner.CheckpointLoader`` then uses it for every path without
    a registered prefix (``http://`` etc. keep their loaders).
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_from_local(filename: str, map_location: Optional[Any] = None):
        # mmengine logs "Loads checkpoint by <name[10:]> backend".
        return load_local_checkpoint(filename, map_location)

    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
