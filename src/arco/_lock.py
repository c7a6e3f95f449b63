"""One training per folder: an OS-level lock on ``FOLDER/.arco.lock``.

The lock is ``fcntl.flock`` on that file, so the kernel releases it when the holder exits or is killed (even by
SIGKILL): a crashed run never leaves a folder locked. The file also records the holder's pid, host and start time,
only to tell the next process who holds it. The file stays in place after release: deleting it would let a third
process lock a new file while a second still holds the old one.

Within one process the lock is re-entrant per folder (nested calls on the same folder share it), so library code
may lock a run folder and then call code that locks it again without deadlocking itself. Stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from arco._checks import ArcoError
from arco._io import writing

__all__ = ["LOCK_NAME", "FolderLockedError", "run_lock", "lock_holder"]

LOCK_NAME = ".arco.lock"

_HELD: dict[str, list[int]] = {}  # real path of the folder -> [fd, depth]
_GUARD = threading.Lock()


class FolderLockedError(ArcoError):
    """Another process is training into the folder."""


def lock_holder(folder: str | os.PathLike) -> dict[str, Any]:
    """What the lock file of ``folder`` says about its (last) holder: ``pid``, ``host``, ``started`` ({} if unknown)."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):  # absent, unreadable, or being written by its holder right now
        return {}
    return info if isinstance(info, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _locked_message(folder: Path, what: str) -> str:
    info = lock_holder(folder)
    pid, host = info.get("pid", "unknown"), info.get("host", "unknown host")
    who = f"pid {pid} on host {host}, started {info.get('started', 'at an unknown time')}"
    text = (
        f"{what} {folder} is in use by another arco training ({who}; lock file {folder / LOCK_NAME}). Two "
        "trainings in one folder would overwrite each other's checkpoints and logs. Wait for that process to finish "
        "(or stop it), or train into another folder with --out."
    )
    if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        text += (
            f" Process {pid} has exited, but a child it started (e.g. a data-loader worker) still holds the lock; "
            "the kernel releases it when that child exits: retry in a few seconds."
        )
    return text


def _acquire(folder: Path, what: str) -> int:
    path = folder / LOCK_NAME
    with writing(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderLockedError(_locked_message(folder, what)) from None
    except OSError as exc:
        os.close(fd)
        raise ArcoError(
            f"cannot lock {path}: {os.strerror(exc.errno or 0)}. The file system of {folder} may not support "
            "file locks (some network mounts); train into a folder on a local disk (--out)."
        ) from exc
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    try:
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
    except BaseException:
        os.close(fd)  # closing the only descriptor releases the lock
        raise
    return fd


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, what: str = "run folder") -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if absent) for the block; yields the lock file's path.

    Args:
        folder: the folder one training writes into.
        what: how messages call it ("run folder", "stage folder").

    Raises:
        FolderLockedError: another process holds it (the message names its pid, host and the fix).
        arco._io.WriteError: the folder or its lock file cannot be created.
    """
    folder = Path(folder)
    with writing(folder / LOCK_NAME):
        folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    with _GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            _HELD[key] = [_acquire(folder, what), 1]
    try:
        yield folder / LOCK_NAME
    finally:
        with _GUARD:
            entry = _HELD[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[key]
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])
