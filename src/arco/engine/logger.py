"""The training log of a stage: ``log.csv`` (always) and TensorBoard events (when installed).

Columns are ``iteration, stage, lr, loss``, then the method's declared ``loss_names`` and ``metric_names``, then
``val_dice``: they come from the method registry, so a new method gets its own columns without touching this file.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arco._io import append_text, atomic_write_text

__all__ = ["RunLogger", "log_columns", "read_rows"]

logger = logging.getLogger(__name__)


def log_columns(names: Sequence[str]) -> tuple[str, ...]:
    """The ``log.csv`` header for a method logging ``names`` (``grad_norm``: the mean global gradient norm before
    clipping over the logged iterations, ``grad_norm_max`` its maximum)."""
    return ("iteration", "stage", "lr", "loss", *names, "grad_norm", "grad_norm_max", "val_dice")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _csv_text(columns: Sequence[str], rows: list[dict[str, Any]], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a ``log.csv``: a last line without its newline (a kill mid-append) is dropped, and so
    is any row whose iteration is unreadable."""
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows, dropped = [], 0
    for row in csv.DictReader(io.StringIO(text, newline="")):
        try:
            int(row.get("iteration") or "")
        except ValueError:
            dropped += 1
            continue
        rows.append(row)
    if dropped:
        logger.warning("%s: dropped %d unreadable row(s)", path, dropped)
    return rows


class RunLogger:
    """Appends rows to ``run_dir/log.csv``; on resume keeps the rows up to the resumed iteration.

    The file is rewritten atomically when a stage starts, then grows one line per row (fsync'ed when a checkpoint
    follows). Rows after the resumed iteration were logged by a run killed before its next checkpoint: they are
    dropped (with a torn last line), and the resumed run logs them again, so the log of a resumed run equals the
    log of an uninterrupted one.
    """

    def __init__(self, run_dir: Path, columns: Sequence[str], resume_iteration: int | None) -> None:
        self.path = run_dir / "log.csv"
        self.columns = tuple(columns)
        rows: list[dict[str, str]] = []
        if resume_iteration is not None and self.path.is_file():
            rows = [r for r in read_rows(self.path) if int(r["iteration"]) <= resume_iteration]
        atomic_write_text(self.path, _csv_text(self.columns, rows, header=True))
        self.tb = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter

            # purge_step drops the events a killed run wrote after the checkpoint it resumes from.
            purge = None if resume_iteration is None else resume_iteration + 1
            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        except ImportError:
            logger.debug("tensorboard is not installed; logging to log.csv only")

    def write(self, row: dict[str, Any], sync: bool = False) -> None:
        """Append ``row``; ``sync`` makes it durable (before a checkpoint that the row must not outlive)."""
        append_text(self.path, _csv_text(self.columns, [{k: _fmt(row.get(k)) for k in self.columns}], False), sync)
        if self.tb is not None:
            it = int(row["iteration"])
            for k, v in row.items():
                if k not in ("iteration", "stage") and v is not None:
                    self.tb.add_scalar(f"{row['stage']}/{k}", float(v), it)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
