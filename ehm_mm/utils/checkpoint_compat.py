# Copyright (c) OpenMMLab. All rights reserved.
"""Let mmengine checkpoints load under ``torch.load(weights_only=True)``.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True`` and refuses
any class it does not know. mmengine 0.10.7 saves its ``MessageHub`` state
(``HistoryBuffer`` objects, numpy scalars and arrays) in every checkpoint and
loads checkpoints with a plain ``torch.load``, so ``--resume`` fails with
``Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer``.

Instead of turning the safety check off, :func:`register_checkpoint_safe_globals`
adds exactly the classes mmengine writes to torch's allow-list.
"""
from typing import Any, List

import numpy as np
import torch


def _numpy_globals() -> List[Any]:
    """Numpy types that pickled numpy scalars and arrays refer to."""
    found: List[Any] = [np.ndarray, np.dtype]
    # ``np.core`` was renamed ``np._core`` in numpy 2; pickles name either.
    for module_name in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        try:
            module = __import__(module_name, fromlist=['scalar'])
        except ImportError:
            continue
        for name in ('scalar', '_reconstruct'):
            if hasattr(module, name):
                found.append(getattr(module, name))
    # numpy >= 1.25 pickles dtypes as instances of ``numpy.dtypes.*DType``.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found.extend(
            getattr(dtypes, name) for name in dir(dtypes)
            if name.endswith('DType'))
    return found


def checkpoint_safe_globals() -> List[Any]:
    """List the classes mmengine stores in a training checkpoint.

    Returns:
        list: Classes and functions to pass to
        ``torch.serialization.add_safe_globals``.
    """
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer] + _numpy_globals()


def register_checkpoint_safe_globals() -> None:
    """Allow-list mmengine's checkpoint classes for ``torch.load``.

    A no-op on torch versions without ``add_safe_globals`` (< 2.4), which do
    not default to ``weights_only=True`` either.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return
    add_safe_globals(checkpoint_safe_globals())
