"""Where and when a study ran: the machine, the code, and one record per ``arco study`` invocation.

Every invocation that reaches its summary appends a record to ``DIR/history.jsonl`` (start time, wall seconds,
jobs run and failed, ``--jobs``, the commit and the machine); ``study.json`` holds the list and the total, so the
wall time of a study resumed several times is the sum of its invocations. An invocation killed before its summary
leaves no record.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text

__all__ = ["machine", "record_invocation", "HISTORY"]

logger = logging.getLogger(__name__)

HISTORY = "history.jsonl"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, Any]:
    """The CPU model, its cores (all, and those this process may use), the load average, torch, Python, the OS and
    the GPU when torch sees one."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not available
        load = []
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "load_average": load,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "gpu": gpu,
    }


def record_invocation(out: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Append ``entry`` to ``out/history.jsonl``; returns every record, oldest first (an unreadable line is reported
    and left out of the list, not deleted from the file)."""
    path = out / HISTORY
    lines = path.read_text().splitlines() if path.is_file() else []
    lines.append(json.dumps(entry, sort_keys=True))
    atomic_write_text(path, "\n".join(lines) + "\n")
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            logger.warning("%s: skipping an unreadable line (%s): %.80s", path, exc, line)
    return records
