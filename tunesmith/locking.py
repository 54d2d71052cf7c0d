"""One holder at a time for long commands (`tunesmith run` in a project, `tunesmith loop run` per
deployment): a second invocation stops at once with the holder's pid instead of racing the first.

Why not `filelock` (installed with huggingface_hub): its non-blocking acquire says only that the lock is
taken; a user needs to know which process holds it, so the holder writes its pid into the lock file.
`fcntl.flock` releases the lock when the process dies, so a killed command never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tunesmith.config import ConfigError

__all__ = ["single_holder"]


@contextmanager
def single_holder(path: Path, busy: Callable[[str], str]) -> Iterator[None]:
    """Hold `path` exclusively for the block; if another process holds it, raise `ConfigError(busy(pid))`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.seek(0)
            raise ConfigError(busy(handle.read().strip())) from error
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield
