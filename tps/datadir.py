"""The data dir: made usable, and held by one process at a time.

Two TPS processes writing one data dir corrupt each other: the second one's spool
recovery deletes segments the first is still writing into. So a process that ingests
takes an exclusive ``flock`` on ``<data_dir>/tps.lock`` for its whole life and writes
its pid and host name into the file; a second one finds the lock taken and stops with
one line naming the holder. The kernel drops the lock when the holder exits, however
it exits (kill -9 included), so a stale lock file never blocks a restart.

A data dir TPS cannot create, read or write is reported as one line too
(:class:`~tps.errors.ConfigError`, exit code 2), not as a traceback from deep inside
the spool or the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from pathlib import Path

from tps.errors import ConfigError, DataDirInUse

logger = logging.getLogger(__name__)

LOCK_FILE = "tps.lock"
SETTING = "TPS_DATA_DIR"


def prepare_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` if needed and check that TPS may read and write it; raise
    ConfigError naming the problem otherwise."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(SETTING, f"cannot create {data_dir}: {exc.strerror}") from None
    if not data_dir.is_dir():
        raise ConfigError(SETTING, f"{data_dir} is not a directory")
    _check_access(data_dir, depth=2)


def _check_access(folder: Path, depth: int) -> None:
    """``folder`` and what it holds (``depth`` levels: the spool's segments too) must be
    readable and writable by this process; ConfigError names the first that is not."""
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(SETTING, f"{folder} is not readable and writable by this user "
                          f"(uid {os.getuid()}); fix its owner or mode")
    if depth <= 1:
        return
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise ConfigError(SETTING, f"cannot list {folder}: {exc.strerror}") from None
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            _check_access(path, depth - 1)
        elif entry.is_file(follow_symlinks=False) and not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(SETTING, f"{path} is not readable and writable by this user "
                              f"(uid {os.getuid()}); fix its owner or mode")


class DataDirLock:
    """The exclusive lock on a data dir (see the module docstring); :meth:`release`
    (or the process ending) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Take the lock; DataDirInUse names the holder, ConfigError any other problem."""
        prepare_data_dir(data_dir)
        path = data_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(SETTING, f"cannot create the lock file {path}: "
                              f"{exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host = _holder(fd)
            os.close(fd)
            who = f"pid {pid} on host {host}" if pid is not None else "another process"
            raise DataDirInUse(f"{data_dir} is in use by {who} (lock file {path}); stop it "
                               "or give this process its own TPS_DATA_DIR",
                               pid, host) from None
        except OSError as exc:
            os.close(fd)
            raise ConfigError(SETTING, f"cannot lock {path}: {exc.strerror}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise ConfigError(SETTING, f"cannot write the lock file {path}: "
                              f"{exc.strerror}") from None
        return cls(path, fd)

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _holder(fd: int) -> tuple[int | None, str | None]:
    """The pid and host the lock's holder wrote, if it could be read."""
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    except OSError:
        return None, None
    if len(text) >= 2 and text[0].isdigit():
        return int(text[0]), text[1]
    return None, None
