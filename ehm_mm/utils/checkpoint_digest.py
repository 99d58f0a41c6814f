# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""A sha256 of every tensor of a checkpoint, written at save, checked at load.

torch's zip format stores tensor bytes without a checksum that
``torch.load`` checks: a flipped byte in a weight loads silently.
:func:`add_tensor_digests` stores, under the checkpoint's top-level key
:data:`DIGEST_KEY`, the sha256 of each tensor (and numpy array) of the
checkpoint, named by its path (``state_dict.backbone.cls_token``,
``optimizer.state.3.exp_avg``); the digest covers the dtype, the shape and
the bytes. :func:`verify_tensor_digests` recomputes them after loading and
names every tensor that differs, is missing or was added.

``AtomicCheckpointHook`` adds the digests to every checkpoint it saves
(``tensor_digests=False`` turns that off for very large files), and
:func:`~ehm_mm.utils.load_local_checkpoint` verifies them whenever they are
present, then removes the key, so consumers see the checkpoint as saved.
Other Python values of a checkpoint (``meta``, the message hub's numbers)
are not covered.
"""
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Tuple

import numpy as np
import torch

#: Top-level checkpoint key of the digests.
DIGEST_KEY = 'ehm_tensor_sha256'


def _arrays(obj: Any, path: str) -> Iterator[Tuple[str, Any]]:
    """Every tensor / numpy array in nested dicts, lists and tuples."""
    if torch.is_tensor(obj) or (isinstance(obj, np.ndarray)
                                and not obj.dtype.hasobject):
        yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if path == '' and key == DIGEST_KEY:
                continue
            yield from _arrays(value, f'{path}.{key}' if path else str(key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _arrays(value, f'{path}.{index}')


def _sha256(array: Any) -> str:
    """sha256 of the dtype, the shape and the bytes of a tensor / array."""
    if torch.is_tensor(array):
        tensor = array.detach().to('cpu').contiguous()
        header = f'{tensor.dtype}|{tuple(tensor.shape)}'
        data = tensor.reshape(-1).view(torch.uint8).numpy()
    else:
        header = f'{array.dtype.str}|{array.shape}'
        data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    digest = hashlib.sha256(header.encode())
    digest.update(memoryview(data))  # hashlib releases the GIL here
    return digest.hexdigest()


def tensor_digests(checkpoint: Dict[str, Any]) -> Dict[str, str]:
    """The sha256 of every tensor / array of a checkpoint, by path.

    Hashed in threads (sha256 of large buffers runs outside the GIL).

    Args:
        checkpoint (dict): The checkpoint (nested dicts, lists, tuples).

    Returns:
        dict[str, str]: ``{path: hex digest}``.
    """
    arrays: List[Tuple[str, Any]] = list(_arrays(checkpoint, ''))
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        digests = list(pool.map(lambda item: _sha256(item[1]), arrays))
    return {path: digest for (path, _), digest in zip(arrays, digests)}


def add_tensor_digests(checkpoint: Dict[str, Any]) -> None:
    """Store :func:`tensor_digests` in ``checkpoint[DIGEST_KEY]``.

    Args:
        checkpoint (dict): The checkpoint to be saved; changed in place.
    """
    checkpoint[DIGEST_KEY] = dict(
        algorithm='sha256', tensors=tensor_digests(checkpoint))


def verify_tensor_digests(checkpoint: Any, filename: str) -> bool:
    """Check a loaded checkpoint against its stored digests, and drop them.

    Args:
        checkpoint (Any): What ``torch.load`` returned.
        filename (str): Named in the error.

    Returns:
        bool: True when digests were stored and all match; False when the
        checkpoint has none (nothing was checked).

    Raises:
        ValueError: A tensor differs from what was saved, or is missing or
            added; the message names the file and the tensors.
    """
    if not isinstance(checkpoint, dict) or DIGEST_KEY not in checkpoint:
        return False
    stored = checkpoint.pop(DIGEST_KEY)
    if not isinstance(stored, dict) or stored.get('algorithm') != 'sha256' \
            or not isinstance(stored.get('tensors'), dict):
        raise ValueError(
            f'Checkpoint {filename} has a damaged {DIGEST_KEY!r} entry.')
    expected: Dict[str, str] = stored['tensors']
    found = tensor_digests(checkpoint)
    problems = [f'{path} (its bytes differ from the saved ones)'
                for path in expected
                if path in found and found[path] != expected[path]]
    problems += [f'{path} (missing)' for path in expected
                 if path not in found]
    problems += [f'{path} (not in the saved checkpoint)' for path in found
                 if path not in expected]
    if problems:
        shown = '; '.join(problems[:10])
        more = f' and {len(problems) - 10} more' if len(problems) > 10 else ''
        raise ValueError(
            f'Checkpoint {filename} is damaged: {len(problems)} tensor(s) do '
            f'not match the sha256 stored when it was saved: {shown}{more}. '
            'Restore the file from a backup or use an earlier checkpoint.')
    return True
