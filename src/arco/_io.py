"""Durable file writes: an output appears complete or not at all, even if the process is killed or the disk fills up.

A write goes to a temporary ``.NAME.*.arco-tmp`` file in the target's folder, is fsync'ed, renamed over the target
(``os.replace``, atomic on POSIX) and the folder is fsync'ed so that the rename survives a power loss. A process killed
at any moment leaves the old file or the new one, never a truncated one; at worst a stray temporary remains, which
:func:`remove_stale_temporaries` deletes (call it only while holding the folder's lock). An ``OSError`` while writing
(disk full, permission denied, read-only file system) becomes a :class:`WriteError` naming the path, the reason and
the fix; the previous file is left untouched. Stdlib + torch only.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from arco._checks import ArcoError, path_problem

__all__ = [
    "WriteError",
    "append_text",
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_out_dir",
    "fsync_dir",
    "read_error",
    "read_text",
    "remove_stale_temporaries",
    "staged_outputs",
    "write_error",
    "writing",
]

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".arco-tmp"
_CHUNK = 1 << 20
#: errnos that mean "this output cannot be written here" (rather than a bug in the caller).
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG, errno.EIO, errno.ENOTDIR}
)
_FIXES = {
    errno.ENOSPC: "free space on that disk",
    errno.EDQUOT: "free space or ask for a larger disk quota",
    errno.EACCES: "make the folder writable for this user",
    errno.EPERM: "make the folder writable for this user",
    errno.EROFS: "the file system is mounted read-only",
    errno.EFBIG: "the file is larger than this process may write (see `ulimit -f`)",
    errno.EIO: "the disk reported an I/O error; check it",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


class WriteError(ArcoError):
    """An output could not be written (disk full, no permission, read-only file system); the old file is intact.

    Attributes:
        path: the file that was being written.
        errno: the operating system's error number.
    """

    def __init__(self, message: str, path: Path, errno_: int | None) -> None:
        super().__init__(message)
        self.path, self.errno = path, errno_


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """A :class:`WriteError` for ``exc`` raised while writing ``path``: the path, the reason, the fix."""
    path = Path(path)
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    code = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else "no errno"
    fix = _FIXES.get(exc.errno, "check the disk and the folder's permissions")
    return WriteError(
        f"cannot write {path}: {reason} ({code}). Nothing was replaced: the previous {path.name}, if any, is "
        f"intact. Fix: {fix}, or write to another folder (--out).",
        path,
        exc.errno,
    )


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into a :class:`WriteError` about ``path``."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc) from exc


def _write_bytes(fd: int, data: bytes | memoryview, path: Path) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked). ``path`` names it for tests."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view[:_CHUNK])
        view = view[n:]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder so that a rename or creation in it is durable (file systems without support are skipped)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError as exc:  # the folder became unwritable: the stray file is removed by the next run
        logger.warning("could not remove the temporary file %s: %s", tmp, exc.strerror)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success fsync it and rename it over ``path``.

    Raises ``FileExistsError`` when ``overwrite`` is False and ``path`` exists, and :class:`WriteError` when the
    file cannot be written (the block's own ``OSError`` s with a write errno included). On any error the temporary
    file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
    tmp = Path(name)
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise write_error(path, exc) from exc
            raise
        with writing(path):
            _fsync_file(tmp)
            # mkstemp creates 0600 files; give the output the permissions a plain open() would (umask applies).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        _discard(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically and durably."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_bytes(fd, data, path)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically: a kill or a full disk mid-write never leaves a truncated checkpoint.

    The object is serialised in memory first, so a failing write surfaces as a plain ``OSError`` (a
    :class:`WriteError`), not as an error from inside torch's zip writer.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def append_text(path: str | os.PathLike, text: str, sync: bool = False) -> None:
    """Append ``text`` to ``path`` (created if absent); ``sync`` fsyncs it.

    A failed write is cut back to the previous end of the file, so a full disk never leaves half a line; a kill
    mid-write can, which readers of append-only files must tolerate (drop a last line without its newline).
    """
    path = Path(path)
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            end = os.fstat(fd).st_size
            try:
                _write_bytes(fd, text.encode("utf-8"), path)
                if sync:
                    os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed writer left in ``folder``; returns them. Call only while holding its lock."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        with writing(tmp):
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


# ------------------------------------------------------------------------------------------------ reading
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data (e.g. a .nii.gz image)"),
    (b"\x89PNG", "a PNG image"),
    (b"PK\x03\x04", "a zip archive (e.g. a .pt checkpoint)"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
)


def _sniff(data: bytes) -> str:
    if len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "a NIfTI image"
    return next((what for magic, what in _MAGIC if data.startswith(magic)), "binary data")


def read_error(path: str | os.PathLike, exc: OSError, what: str = "file", error: type = ArcoError) -> ArcoError:
    """An ``error`` naming ``path`` (described as ``what``) for ``exc`` raised while reading it."""
    path = Path(path)
    if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
        reason = path_problem(path)
    elif exc.errno == errno.EISDIR:
        reason = "is a folder, not a file"
    elif exc.errno == errno.EACCES:
        reason = "is not readable (permission denied)"
    else:
        reason = f"cannot be read: {exc.strerror or exc}"
    return error(f"{what} {path} {reason}")


def read_text(path: str | os.PathLike, what: str = "file", error: type = ArcoError, expected: str = "") -> str:
    """The UTF-8 text of ``path``; an ``error`` naming the file (and what it looks like) when it cannot be read or
    is binary. ``what`` describes the file (``"config file"``), ``expected`` the fix (``"give a YAML file"``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise read_error(path, exc, what, error) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fix = f"; {expected}" if expected else ""
        raise error(
            f"{what} {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}; it looks like "
            f"{_sniff(data)}{fix}"
        ) from exc


# ------------------------------------------------------------------------------------------------ output folders
def check_out_dir(out: str | os.PathLike, what: str = "--out") -> Path:
    """Check that folder ``out`` exists or can be created, without creating anything.

    Raises:
        WriteError: ``out`` (or a folder above it) is a file, a symlink loop or a broken symlink, or the nearest
            existing folder is not writable.
    """
    out = Path(out)
    node = out
    while not os.path.lexists(node) and node.parent != node:
        node = node.parent
    if os.path.lexists(node) and not node.exists():  # a link to nowhere or to itself
        raise WriteError(f"{what} {out}: {node} {path_problem(node)}; choose another {what}", out, errno.ENOENT)
    if node.exists() and not node.is_dir():
        if node == out:
            msg = f"{what} {out} is a file, not a folder; give a new or existing folder"
        else:
            msg = f"{what} {out} cannot be created: {node} is a file, not a folder; choose another {what}"
        raise WriteError(msg, out, errno.ENOTDIR)
    if node.exists() and not os.access(node, os.W_OK | os.X_OK):
        where = "is" if node == out else f"cannot be created: {node} is"
        raise WriteError(
            f"{what} {out} {where} not writable for this user; choose another {what} or fix the permissions",
            out,
            errno.EACCES,
        )
    return out


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the folders created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not os.path.lexists(p)][::-1]
    for p in missing:
        p.mkdir()
    return missing


def _publish_into(tmp: Path, out: Path) -> None:
    """Move every file under ``tmp`` to the same relative path under the existing folder ``out``."""
    for src in sorted(f for f in tmp.rglob("*") if not f.is_dir()):
        dest = out / src.relative_to(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    for folder in {out / d.relative_to(tmp) for d in tmp.rglob("*") if d.is_dir()} | {out}:
        fsync_dir(folder)


@contextlib.contextmanager
def staged_outputs(out: str | os.PathLike, what: str = "--out") -> Iterator[Path]:
    """Write a command's outputs all or nothing: yield an empty temporary folder on ``out``'s file system; when the
    block succeeds its files move into ``out`` (a new ``out`` is the renamed folder; in an existing one each file
    replaces its namesake), when it raises the temporary folder is removed and ``out`` is exactly as it was
    (folders this created are removed again).

    Raises:
        WriteError: ``out`` cannot be a folder (`check_out_dir`) or the files cannot be moved into it.
    """
    out = check_out_dir(out, what)
    created: list[Path] = []
    with writing(out):
        if out.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=".arco-staging-", dir=out))
        else:
            created = _make_parents(out.parent)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.arco-staging-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders; a renamed one becomes ``out``
    try:
        yield tmp
        with writing(out):
            if out.exists():
                _publish_into(tmp, out)
            else:
                os.replace(tmp, out)
                fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(tmp, ignore_errors=True)
