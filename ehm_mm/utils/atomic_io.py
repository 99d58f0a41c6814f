# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Write files so that a crash never leaves a half-written one behind.

A file is written under a temporary name in its own folder, flushed to the
disk (``fsync``), and only then renamed to its final name (``os.replace``,
atomic on POSIX and Windows when both names are in one folder); the folder
entry is synced as well. A reader therefore sees either the complete old
file or the complete new one. If the process dies mid-write, only a
``.ehm_tmp.*`` file is left, which :func:`remove_stale_temporaries` deletes.

:class:`AtomicLocalBackend` brings the same guarantee to everything mmengine
writes through a file backend (``backend_args=dict(backend='ehm_atomic')``).
"""
import contextlib
import errno
import glob
import os
import os.path as osp
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Union

from mmengine.fileio import LocalBackend, register_backend

#: Prefix of the temporary files written by this module.
TEMP_PREFIX = '.ehm_tmp.'


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ``mkstemp`` creates files readable by the owner only; final files get the
# permissions a plain ``open(path, 'w')`` would give them.
_FILE_MODE = 0o666 & ~_current_umask()


def _fsync_dir(folder: str) -> None:
    """Persist a folder entry (a rename) where the OS allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Union[str, Path]) -> Iterator[str]:
    """Give a temporary path that replaces ``path`` when the block succeeds.

    Write the file at the yielded path (by any means: ``torch.save``, a
    converter ...). When the ``with`` block ends without an exception the
    file is synced and renamed to ``path``; when it raises, the temporary
    file is deleted and an existing ``path`` is left untouched.

    Args:
        path (str | Path): The final file path.

    Yields:
        str: The temporary path (same folder, hidden name).
    """
    path = osp.abspath(os.fspath(path))
    folder = osp.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f'{TEMP_PREFIX}{osp.basename(path)}.', dir=folder)
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def _mib(num_bytes: int) -> str:
    return f'{num_bytes / 2**20:.1f} MiB'


def _space_message(path: str, needed: int, free: int) -> str:
    """Say which file could not be written and how much room it needs."""
    return (f'Cannot write {path}: it needs {_mib(needed)} free in '
            f'{osp.dirname(path)}, {_mib(free)} are free. The file it '
            'replaces (e.g. the previous checkpoint) is kept until the new '
            'one is complete, so the disk must hold both at once (for '
            'checkpoints: two checkpoints). Free some space, or save to '
            'another disk (CheckpointHook out_dir).')


def atomic_write_bytes(data: bytes, path: Union[str, Path]) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    The free space of the folder is checked first, and a failed write
    names the file and the room it needs.

    Args:
        data (bytes): The file content.
        path (str | Path): The final file path; its folder is created.

    Raises:
        OSError: ``errno.ENOSPC`` (or the write's own errno) with a message
            naming ``path``, the bytes needed and the bytes free; ``path``
            is left as it was.
    """
    path = osp.abspath(os.fspath(path))
    os.makedirs(osp.dirname(path), exist_ok=True)
    free = shutil.disk_usage(osp.dirname(path)).free
    if free < len(data):
        raise OSError(errno.ENOSPC, _space_message(path, len(data), free))
    try:
        with atomic_path(path) as tmp:
            with open(tmp, 'wb') as f:
                f.write(data)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        free = shutil.disk_usage(osp.dirname(path)).free
        raise OSError(error.errno,
                      f'{error.strerror}. ' +
                      _space_message(path, len(data), free)) from error


def atomic_write_text(text: str,
                      path: Union[str, Path],
                      encoding: str = 'utf-8') -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        text (str): The file content.
        path (str | Path): The final file path; its folder is created.
        encoding (str): Text encoding. Defaults to ``'utf-8'``.
    """
    atomic_write_bytes(text.encode(encoding), path)


def remove_stale_temporaries(folder: Union[str, Path]) -> List[str]:
    """Delete the temporary files a killed writer left in ``folder``.

    Only call this while no other process writes into ``folder``.

    Args:
        folder (str | Path): The folder to clean (not recursive).

    Returns:
        list[str]: The deleted paths.
    """
    removed = []
    for path in sorted(glob.glob(osp.join(glob.escape(os.fspath(folder)),
                                          TEMP_PREFIX + '*'))):
        if osp.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


@register_backend('ehm_atomic', force=True)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put`` and ``put_text``.

    ``mmengine.runner.save_checkpoint`` writes through ``backend.put``; with
    this backend a checkpoint file is either complete or absent, never
    truncated. Select it with ``backend_args=dict(backend='ehm_atomic')``.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        """Write bytes to ``filepath`` atomically.

        Args:
            obj (bytes): Data to be written.
            filepath (str | Path): Path to write data.
        """
        atomic_write_bytes(obj, filepath)

    def put_text(self,
                 obj: str,
                 filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        """Write text to ``filepath`` atomically.

        Args:
            obj (str): Text to be written.
            filepath (str | Path): Path to write data.
            encoding (str): Text encoding. Defaults to ``'utf-8'``.
        """
        atomic_write_text(obj, filepath, encoding)
