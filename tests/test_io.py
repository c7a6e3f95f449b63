"""arco._io: atomic, durable writes. A full disk, a missing permission or a killed writer never leaves a truncated
file; errors name the path, the reason and the fix."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

import arco._io as durable
from arco._io import (
    WriteError,
    append_text,
    atomic_path,
    atomic_torch_save,
    atomic_write_text,
    remove_stale_temporaries,
)


def fail_writes(monkeypatch, fraction: float, err: int = errno.ENOSPC, name: str | None = None, nth: int = 1) -> None:
    """Make the ``nth`` write (of a file called ``name``) write ``fraction`` of its bytes, then raise ``err``."""
    original = durable._write_bytes
    seen = 0

    def write(fd: int, data, path: Path) -> None:
        nonlocal seen
        if name is None or Path(path).name == name:
            seen += 1
            if seen == nth:
                view = memoryview(data).cast("B")
                original(fd, view[: int(len(view) * fraction)], path)
                raise OSError(err, os.strerror(err))
        original(fd, data, path)

    monkeypatch.setattr(durable, "_write_bytes", write)


def test_full_disk_mid_checkpoint_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_torch_save({"w": torch.arange(10)}, path)
    fail_writes(monkeypatch, 0.5)
    match = r"cannot write .*last\.pt: No space left on device \(ENOSPC\).*previous last\.pt.*intact.*free space"
    with pytest.raises(WriteError, match=match) as info:
        atomic_torch_save({"w": torch.arange(100_000)}, path)
    assert info.value.path == path and info.value.errno == errno.ENOSPC
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(10))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temporary is removed


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (errno.EACCES, "Permission denied (EACCES). Nothing was replaced: the previous summary.json, if any, is "
                       "intact. Fix: make the folder writable for this user"),
        (errno.EROFS, "Read-only file system (EROFS)"),
        (errno.EDQUOT, "quota"),
        (errno.EFBIG, "ulimit -f"),
    ],
)  # fmt: skip
def test_write_errors_name_the_reason_and_the_fix(tmp_path, monkeypatch, err, words):
    fail_writes(monkeypatch, 0.0, err)
    with pytest.raises(WriteError) as info:
        atomic_write_text(tmp_path / "summary.json", "{}")
    assert words in str(info.value) and str(tmp_path / "summary.json") in str(info.value)
    assert "--out" in str(info.value)
    assert not list(tmp_path.iterdir())


def test_failed_append_is_cut_back_to_whole_lines(tmp_path, monkeypatch):
    log = tmp_path / "log.csv"
    append_text(log, "a,1\n")
    fail_writes(monkeypatch, 0.5)
    with pytest.raises(WriteError, match="log.csv: No space left"):
        append_text(log, "b,2\n" * 100)
    assert log.read_text() == "a,1\n"


def test_atomic_path_turns_write_errors_of_its_block_into_write_errors(tmp_path):
    with pytest.raises(WriteError, match=r"x\.png: Permission denied"):
        with atomic_path(tmp_path / "x.png"):
            raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(FileNotFoundError, match="font"):  # not a write error: passes through unchanged
        with atomic_path(tmp_path / "y.png"):
            raise FileNotFoundError(errno.ENOENT, "font")
    assert not list(tmp_path.iterdir())


def test_writes_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert len(synced) == 2 and synced[0].endswith(".arco-tmp") and Path(synced[0]).parent == tmp_path
    assert synced[1] == str(tmp_path)  # the rename is made durable too
    assert (tmp_path / "config.yaml").read_text() == "a: 1\n"
    assert oct((tmp_path / "config.yaml").stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_remove_stale_temporaries_only_removes_ours(tmp_path):
    (tmp_path / ".last.pt.abc123.arco-tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "notes.tmp").write_text("user file")
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".last.pt.abc123.arco-tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes.tmp"]
