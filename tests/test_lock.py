"""arco._lock: one training per run folder. A second process refuses with the holder's pid/host and the fix; a
killed holder never leaves the folder locked (the kernel releases an flock when its process dies)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from _tiny import run_method, tiny_data, train_argv
from arco._lock import LOCK_NAME, FolderLockedError, lock_holder, run_lock

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOLD = """
import os, sys, time
from arco._lock import run_lock
held = run_lock(sys.argv[1])  # keep a reference: collecting it would release the lock
held.__enter__()
if len(sys.argv) > 2 and os.fork():  # "fork": the parent exits, a child keeps the inherited lock
    os._exit(0)
print(os.getpid(), flush=True)
time.sleep(600)
"""
TRY = """
import sys
from arco._lock import FolderLockedError, run_lock
try:
    with run_lock(sys.argv[1]):
        print("ok")
except FolderLockedError as exc:
    print("refused:", exc)
"""


def _hold(folder, *extra: str) -> tuple[subprocess.Popen, int]:
    """A process holding the lock of ``folder``; returns it and the pid that holds the lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), *extra], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def _try(folder) -> str:
    return subprocess.run([sys.executable, "-c", TRY, str(folder)], capture_output=True, text=True).stdout


def _squash(text: str) -> str:
    return "".join(text.split())  # the CLI wraps messages at 110 columns


def test_lock_is_reentrant_in_process_and_records_the_holder(tmp_path):
    with run_lock(tmp_path) as path:
        with run_lock(tmp_path):  # nested in one process: no self-deadlock
            pass
        assert path == tmp_path / LOCK_NAME
        info = lock_holder(tmp_path)
        assert _try(tmp_path).startswith("refused:")  # still held after the inner block
    assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["started"]
    assert _try(tmp_path) == "ok\n"


def test_a_killed_holder_does_not_leave_the_folder_locked(tmp_path):
    proc, pid = _hold(tmp_path)
    with pytest.raises(FolderLockedError) as info:
        with run_lock(tmp_path, "run folder"):
            pass
    text = str(info.value)
    for words in (f"run folder {tmp_path} is in use", f"pid {pid} on host {socket.gethostname()}", "--out", "Wait"):
        assert words in text, words
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_holder(tmp_path)["pid"] == pid  # the file still names the dead holder...
    with run_lock(tmp_path):  # ...but the lock is free
        assert lock_holder(tmp_path)["pid"] == os.getpid()


def test_an_exited_holder_whose_child_keeps_the_lock_is_explained(tmp_path):
    proc, child = _hold(tmp_path, "fork")
    proc.wait()
    try:
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{proc.pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(FolderLockedError, match=f"Process {proc.pid} has exited, but a child"):
            with run_lock(tmp_path):
                pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_fit_locks_its_stage_folder(tmp_path):
    proc, pid = _hold(tmp_path / "stage")
    try:
        with pytest.raises(FolderLockedError, match=f"stage folder {tmp_path / 'stage'} is in use .*pid {pid}"):
            run_method(tmp_path / "stage", "supervised", tiny_data(2), 1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "stage" / "log.csv").exists()  # refused before writing anything


def test_second_arco_train_into_the_same_run_folder_refuses(tmp_path):
    """Two real `arco train` processes: the second exits 2 naming the folder, the first one's pid and host, and
    the fix; once the first is SIGKILLed the folder can be trained into again."""
    out = tmp_path / "run"
    argv = train_argv(tmp_path / "data", out, ["schedule.iterations=100000"], ("--method", "supervised"))
    first = subprocess.Popen([sys.executable, "-m", "arco", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while lock_holder(out).get("pid") != first.pid and time.monotonic() < deadline:
            assert first.poll() is None, "the first training ended early"
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "arco", *argv], capture_output=True, text=True, env=ENV,
                                timeout=300)  # fmt: skip
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    err = _squash(second.stderr)
    for words in (f"runfolder{out}isinuse", f"pid{first.pid}onhost{socket.gethostname()}", "--out", "Waitfor"):
        assert words in err, (words, second.stderr)
    with run_lock(out):  # the killed first process left no stuck lock
        pass
