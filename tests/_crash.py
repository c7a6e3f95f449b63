"""Run the ``arco`` CLI and SIGKILL it in the middle of a chosen file write (kill-anywhere tests).

    python tests/_crash.py NAME:N:FRACTION -- train --config ... --out RUN [--resume]

During the N-th write of a file called NAME (``last.pt``, ``best.pt``, ``summary.json``, ``log.csv``, ...) the process
writes FRACTION of the bytes and then sends itself SIGKILL, so the kill lands inside a checkpoint/log/summary write
(FRACTION 0: just before its first byte) rather than wherever a timer happens to fire. Everything else is the real
``arco`` command; if the write never comes, the command runs to its end.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import arco._io as durable


def _install(name: str, nth: int, fraction: float) -> None:
    original = durable._write_bytes
    seen = 0

    def write(fd: int, data, path: Path) -> None:
        nonlocal seen
        if Path(path).name == name:
            seen += 1
            if seen == nth:
                view = memoryview(data).cast("B")
                original(fd, view[: int(len(view) * fraction)], path)
                os.kill(os.getpid(), signal.SIGKILL)
        original(fd, data, path)

    durable._write_bytes = write


def main() -> int:
    spec, sep, *argv = sys.argv[1:]
    if sep != "--":
        raise SystemExit(__doc__)
    name, nth, fraction = spec.split(":")
    _install(name, int(nth), float(fraction))
    from arco.cli import main as arco_main

    return arco_main(argv)


if __name__ == "__main__":
    sys.exit(main())
