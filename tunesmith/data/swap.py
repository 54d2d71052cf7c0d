"""Replacing a folder with a staged one so that a kill at any moment leaves a complete folder. No torch.

Owns: swapping a staged folder into place and making it durable (the staged files, then the parent
folder, fsynced), and undoing a swap that was interrupted. On Linux the swap is one system call,
`renameat2(RENAME_EXCHANGE)`: the target is the old folder or the new one, never neither. Where that
call is missing (not Linux, a C library without the wrapper) or the filesystem refuses it, the swap
takes two renames, target to `.NAME-old` and staged folder to target; a kill between them leaves no
target but a `.NAME-old`, which `recover_interrupted_swap` (called by whoever next reads or writes
the folder) renames back. Does not own: what is in the folders.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

AT_FDCWD = -100  # <fcntl.h>: paths relative to the working directory
RENAME_EXCHANGE = 2  # <linux/fs.h>: swap the two paths atomically; both must exist
# what renameat2 says when the kernel lacks it (ENOSYS) or the filesystem lacks the flag (EINVAL)
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}


class ExchangeUnsupportedError(OSError):
    """This system or filesystem cannot exchange two paths atomically."""


def swap_folder(staging: Path, target: Path) -> None:
    """Put the complete folder `staging` at `target`; the old `target`, if any, ends up at `staging`.

    The caller deletes `staging` afterwards. A kill at any moment leaves `target` complete, old or new
    (with the two-rename fallback: or a `.NAME-old` that `recover_interrupted_swap` puts back).
    """
    _fsync_tree(staging)
    recover_interrupted_swap(target)
    if not target.exists():
        os.rename(staging, target)
    else:
        try:
            exchange(staging, target)
        except ExchangeUnsupportedError:
            _swap_by_renames(staging, target)
    _fsync_folder(target.parent)


def recover_interrupted_swap(target: Path) -> bool:
    """Put back the folder a swap interrupted between its two renames left aside; True if it did."""
    if target.exists():  # (first: `.` and `/` have no name to set aside under)
        return False
    aside = _aside(target)
    if not aside.is_dir():
        return False
    try:
        os.rename(aside, target)
    except FileNotFoundError:  # another process recovered it first
        return False
    _fsync_folder(target.parent)
    logger.warning("%s: restored from %s, left by an interrupted swap", target, aside.name)
    return True


def exchange(first: Path, second: Path) -> None:
    """Swap two existing paths in one step; ExchangeUnsupportedError where the system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        raise ExchangeUnsupportedError(errno.ENOSYS, "renameat2 is not available")
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        if code in _UNSUPPORTED:
            raise ExchangeUnsupportedError(code, os.strerror(code))
        raise OSError(code, os.strerror(code), str(first), None, str(second))


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """libc's `renameat2`, or None off Linux or with a C library older than the wrapper (glibc 2.28)."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        function = libc.renameat2
    except AttributeError:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _swap_by_renames(staging: Path, target: Path) -> None:
    """Two renames, each made durable; between them only `.NAME-old` holds the old folder."""
    aside = _aside(target)
    shutil.rmtree(aside, ignore_errors=True)  # a leftover of a swap whose second rename did happen
    os.rename(target, aside)
    _fsync_folder(target.parent)
    os.rename(staging, target)
    _fsync_folder(target.parent)
    os.rename(aside, staging)  # the old folder goes where the caller deletes it


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}-old")


def _fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, then the folders, so a rename never publishes empty files."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        elif path.is_dir():
            _fsync_folder(path)
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
