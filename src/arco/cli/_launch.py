"""`arco train --nproc N`: re-launch the same command on N processes through torchrun, and end with arco's own
one-paragraph error when a rank fails (not torchrun's traceback and ``ChildFailedError`` report).

The parent runs ``python -m torch.distributed.run --standalone --nproc-per-node=N -m arco ...`` with
``ARCO_RANK_ERRORS`` naming a fresh log folder. A failing rank (`record_rank_error`, called by `arco.cli.main`)
writes its message and exit code to ``rank<r>.json`` and its traceback to ``rank<r>.log`` there instead of printing;
the parent forwards the ranks' output as it comes, keeps torchrun's own report in ``torchrun.log``, and ends with
the failing rank's message, the path of its log and its exit code. The folder is removed after a success.
``arco --debug`` shows everything unfiltered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["RANK_ERRORS_ENV", "record_rank_error", "relaunch"]

RANK_ERRORS_ENV = "ARCO_RANK_ERRORS"
#: torchrun's (and c10d's) own log lines: ``W1207 13:00:30.732000 5818 torch/distributed/...``.
_LAUNCHER_LINE = re.compile(rb"^\s*[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ ")
_TRACEBACK = b"Traceback (most recent call last):"


def record_rank_error(message: str, code: int, trace: str) -> bool:
    """In a rank launched by :func:`relaunch`: write the error for the parent and return True (print nothing);
    elsewhere return False."""
    folder = os.environ.get(RANK_ERRORS_ENV)
    if not folder or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    rank = int(os.environ.get("RANK", "0"))
    try:
        Path(folder, f"rank{rank}.log").write_text(f"{trace}\n{message}\n")
        Path(folder, f"rank{rank}.json").write_text(json.dumps({"message": message, "code": code, "rank": rank}))
    except OSError:
        return False  # the parent's folder is gone: print as usual
    return True


class _Filter:
    """Forward the ranks' stderr; keep torchrun's log lines and its final traceback report in a file."""

    def __init__(self, log: Path) -> None:
        self.log = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.diverted = False
        self.buffer = b""

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        parts = re.split(rb"(?<=[\r\n])", self.buffer)
        self.buffer = parts.pop() if parts and not parts[-1].endswith((b"\n", b"\r")) else b""
        for part in parts:
            self._line(part)

    def _line(self, line: bytes) -> None:
        if line.startswith(_TRACEBACK):
            self.diverted = True  # the ranks print no tracebacks: this is torchrun's ChildFailedError report
        if self.diverted or _LAUNCHER_LINE.match(line):
            self.log.write(line)
        else:
            sys.stderr.buffer.write(line)
            sys.stderr.buffer.flush()

    def close(self) -> None:
        if self.buffer:
            self._line(self.buffer)
        self.log.close()


def _rank_errors(folder: Path) -> list[dict]:
    errors = []
    for path in sorted(folder.glob("rank*.json")):
        try:
            errors.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    # the root cause first: not a report of another rank's failure, a user error before a crash, the lowest rank
    return sorted(errors, key=lambda e: (str(e["message"]).startswith("rank 0 failed"), e["code"] != 2, e["rank"]))


def _strip_nproc(argv: list[str]) -> list[str]:
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    return rest


def relaunch(argv: list[str], nproc: int) -> int:
    """Run ``arco ARGV`` (without ``--nproc``) on ``nproc`` processes through torchrun; returns the exit code.

    Raises:
        ArcoError: a rank failed (its message, rank and log path), or torchrun itself
            failed before a rank reported (its report's path); ``.exit_code`` is the code to exit with.
    """
    from arco._checks import ArcoError

    debug = "--debug" in argv[: argv.index("train")] if "train" in argv else False
    folder = Path(tempfile.mkdtemp(prefix="arco-nproc-"))
    env = {**os.environ, RANK_ERRORS_ENV: str(folder)}
    env.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets, without its banner
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "arco", *_strip_nproc(argv)]
    if debug:
        return subprocess.call(cmd, env=env)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    report = _Filter(folder / "torchrun.log")
    try:
        while chunk := os.read(proc.stderr.fileno(), 65536):
            report.feed(chunk)
    finally:
        report.close()
        code = proc.wait()
    if code == 0:
        shutil.rmtree(folder, ignore_errors=True)
        return 0
    errors = _rank_errors(folder)
    if not errors:
        error = ArcoError(
            f"the {nproc} training processes failed (torchrun exit code {code}) before any of them reported an "
            f"error; torchrun's report: {folder / 'torchrun.log'}"
        )
        error.exit_code = 1
        raise error
    first = errors[0]
    log = folder / f"rank{first['rank']}.log"
    error = ArcoError(f"{first['message']} (rank {first['rank']} of {nproc} failed; its log: {log})")
    error.exit_code = int(first["code"])
    raise error
