"""Where and when a study ran: the machine, the code, and one record per ``arco study`` invocation.

Every invocation that reaches its summary appends a record to ``DIR/history.jsonl`` (start time, wall seconds,
jobs run and failed, ``--jobs``, the commit and the machine); ``study.json`` holds the list and the total, so the
wall time of a study resumed several times is the sum of its invocations. An invocation killed before its summary
leaves no record. A study that ran before its history was kept, or whose invocations were killed, under-reports
its wall time; :func:`training_seconds` adds what its stage folders recorded, which does not depend on the history.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text

__all__ = ["machine", "record_invocation", "training_seconds", "HISTORY"]

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


def training_seconds(out: Path) -> tuple[float, int]:
    """``(seconds, stages)``: the training time the study's own stage folders record in their ``summary.json``
    (``wall_seconds``), each stage once, stages linked from another study (``--reuse``) left out. A stage resumed
    after a kill records its last invocation only, so this is a lower bound."""
    out = Path(out).resolve()
    seen: set[Path] = set()
    total = 0.0
    for path in [*out.glob("runs/*/seed*/*/summary.json"), *out.glob("shared/*/*/summary.json")]:
        real = path.resolve()
        if real in seen or not real.is_relative_to(out):
            continue
        try:
            data = json.loads(real.read_text())
            seconds = float(data["wall_seconds"]) if "stage" in data else None  # evaluation/ has a summary too
        except (OSError, ValueError, TypeError, KeyError):
            logger.warning("%s: unreadable stage summary, its time is not counted", real)
            continue
        if seconds is not None:
            seen.add(real)
            total += seconds
    return round(total, 1), len(seen)
