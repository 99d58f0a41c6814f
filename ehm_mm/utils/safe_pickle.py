# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Read data pickles without letting them run code.

``pickle.load`` calls whatever function a file names, so a crafted dataset
file (e.g. a ground-truth ``gnd_*.pkl``) can run a shell command.
:func:`load_data_pickle` admits only plain data: lists, tuples, dicts,
sets, strings, bytes, numbers, booleans, None and numpy arrays / scalars.
Any other global is refused with an error naming the file and the global.
"""
import io
import os
import pickle
from typing import Any, Dict, Tuple, Union

from .checkpoint_compat import numpy_pickle_globals


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    allowed = {}
    found = numpy_pickle_globals()
    # Protocol-5 pickles of arrays (numpy >= 1.16).
    for module_name in ('numpy._core.numeric', 'numpy.core.numeric'):
        try:
            found.append(__import__(module_name, fromlist=['_']).__dict__[
                '_frombuffer'])
        except (ImportError, KeyError):
            pass
    for obj in found:
        if isinstance(obj, tuple):  # (replacement, 'module.name')
            obj, full_name = obj
            module, name = full_name.rsplit('.', 1)
        else:
            module = getattr(obj, '__module__', None)
            name = getattr(obj, '__name__', None)
        if module and name:
            allowed[(module, name)] = obj
    # numpy pickles its arrays under the module path it had when the file
    # was written (``numpy.core`` before numpy 2, ``numpy._core`` after).
    for (module, name), obj in list(allowed.items()):
        for old, new in (('numpy._core', 'numpy.core'),
                         ('numpy.core', 'numpy._core')):
            if module.startswith(old):
                allowed.setdefault((new + module[len(old):], name), obj)
    import _codecs
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1') and
    # sets, bytes etc. as calls of the builtin types.
    allowed[('_codecs', 'encode')] = _codecs.encode
    for builtin in (bytes, bytearray, set, frozenset, complex):
        allowed[('builtins', builtin.__name__)] = builtin
    return allowed


class DataUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array / scalar globals.

    Args:
        file: A binary file object.
        source (str): Named in errors. Defaults to ``'<pickle>'``.
    """

    def __init__(self, file, source: str = '<pickle>') -> None:
        super().__init__(file)
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global if it is allowed, else refuse.

        Args:
            module (str): The global's module.
            name (str): The global's name.

        Returns:
            Any: The allowed object.

        Raises:
            pickle.UnpicklingError: For every other global.
        """
        if module == '__builtin__':  # Python 2 name, in protocol < 3
            module = 'builtins'
        obj = self.allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f'{self.source} refers to {module}.{name}; data files may '
                'only hold lists, dicts, strings, numbers and numpy arrays, '
                'so it is not loaded (a crafted pickle can run code)')
        return obj


def load_data_pickle(path: Union[str, os.PathLike]) -> Any:
    """Load a pickle that must hold plain data only.

    Args:
        path (str | PathLike): The pickle file.

    Returns:
        Any: The unpickled data.

    Raises:
        pickle.UnpicklingError: The file names a global other than numpy's
            array and scalar reconstructors, or is not a valid pickle.
    """
    path = os.fspath(path)
    with open(path, 'rb') as f:
        data = f.read()
    if not data:
        raise pickle.UnpicklingError(f'{path} is empty')
    try:
        return DataUnpickler(io.BytesIO(data), source=path).load()
    except pickle.UnpicklingError as error:
        if path in str(error):  # refused by find_class
            raise
        raise pickle.UnpicklingError(
            f'{path} is not a valid pickle ({error})') from None
    except (EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError) as error:
        raise pickle.UnpicklingError(
            f'{path} is not a valid pickle ({type(error).__name__}: '
            f'{error})') from None
