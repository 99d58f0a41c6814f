# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Let mmengine checkpoints load under ``torch.load(weights_only=True)``.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True`` and refuses
any class it does not know. mmengine 0.10.7 saves its ``MessageHub`` state
(``HistoryBuffer`` objects, numpy scalars and arrays) in every checkpoint and
loads checkpoints with a plain ``torch.load``, so ``--resume`` fails with
``Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer``.

Instead of turning the safety check off, this module adds exactly what
mmengine writes to torch's allow-list (:func:`checkpoint_safe_globals`).
``HistoryBuffer`` also pickles its statistics methods as
``getattr(HistoryBuffer, 'mean')``; allowing the builtin ``getattr`` would
re-open arbitrary code execution, so a ``getattr`` that only resolves
``HistoryBuffer``'s own statistics methods is registered under that name.

Numpy arrays of ``object`` dtype are refused: numpy rebuilds them from a
pickled list it trusts (forged bytes give a bare ``TypeError``, or crash
the process when the list is shorter than the shape), and mmengine never
writes them. ``numpy.dtype`` is therefore registered as
:func:`plain_numpy_dtype`, which refuses every dtype holding objects.
"""
import pickle
from typing import Any, Callable, List

import numpy as np
import torch


def numpy_pickle_globals() -> List[Any]:
    """Numpy types that pickled numpy scalars and arrays refer to.

    Returns:
        list: ``numpy.ndarray``, :func:`plain_numpy_dtype` as
        ``numpy.dtype``, the reconstruct / scalar functions (under
        ``numpy.core`` and ``numpy._core``) and the ``numpy.dtypes.*DType``
        classes except ``ObjectDType``.
    """
    found: List[Any] = [np.ndarray, (plain_numpy_dtype, 'numpy.dtype')]
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
            if name.endswith('DType') and name != 'ObjectDType')
    return found


def plain_numpy_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype(*args)`` for dtypes that hold no Python objects.

    Args:
        *args: The arguments a pickled dtype is rebuilt with (e.g.
            ``('f8', False, True)``).

    Returns:
        numpy.dtype: The dtype.

    Raises:
        pickle.UnpicklingError: For an ``object`` dtype, or a structured
            dtype with an ``object`` field.
    """
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(
            f'ehm_mm refuses numpy arrays of object dtype ({dtype!r}) in '
            'checkpoints: numpy trusts the pickled Python objects they hold')
    return dtype


def history_buffer_getattr(obj: Any, name: str) -> Callable:
    """A ``getattr`` restricted to ``HistoryBuffer``'s statistics methods.

    Args:
        obj (Any): Must be :class:`mmengine.logging.HistoryBuffer`.
        name (str): A statistics method registered on it (``'mean'`` ...).

    Returns:
        Callable: The method.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and (name in HistoryBuffer._statistics_methods
                                 or name in ('min', 'max', 'mean',
                                             'current')):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'ehm_mm only allows getattr(HistoryBuffer, <statistics method>) '
        f'in weights-only checkpoints, got getattr({obj!r}, {name!r})')


def checkpoint_safe_globals() -> List[Any]:
    """List the classes mmengine stores in a training checkpoint.

    Returns:
        list: Entries for ``torch.serialization.add_safe_globals``: classes,
        and one ``(function, 'builtins.getattr')`` pair.
    """
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, (history_buffer_getattr, 'builtins.getattr')
            ] + numpy_pickle_globals()


def register_checkpoint_safe_globals() -> None:
    """Allow-list mmengine's checkpoint classes for ``torch.load``.

    A no-op on torch versions without ``add_safe_globals`` (< 2.4), which do
    not default to ``weights_only=True`` either.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return
    add_safe_globals(checkpoint_safe_globals())
