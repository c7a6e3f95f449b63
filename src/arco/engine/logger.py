"""The training log of a stage: ``log.csv`` (always) and TensorBoard events (when installed).

Columns are ``iteration, stage, lr, loss``, then the method's declared ``loss_names`` and ``metric_names``, then
``val_dice``: they come from the method registry, so a new method gets its own columns without touching this file.
"""

from __future__ import annotations

import csv
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "log_columns"]

logger = logging.getLogger(__name__)


def log_columns(names: Sequence[str]) -> tuple[str, ...]:
    """The ``log.csv`` header for a method logging ``names``."""
    return ("iteration", "stage", "lr", "loss", *names, "val_dice")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class RunLogger:
    """Appends rows to ``run_dir/log.csv``; on resume keeps the rows up to the resumed iteration."""

    def __init__(self, run_dir: Path, columns: Sequence[str], resume_iteration: int | None) -> None:
        self.path = run_dir / "log.csv"
        self.columns = tuple(columns)
        rows: list[dict[str, str]] = []
        if resume_iteration is not None and self.path.is_file():
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= resume_iteration]
        with open(self.path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        self.tb = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            logger.debug("tensorboard is not installed; logging to log.csv only")

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns).writerow({k: _fmt(row.get(k)) for k in self.columns})
        if self.tb is not None:
            it = int(row["iteration"])
            for k, v in row.items():
                if k not in ("iteration", "stage") and v is not None:
                    self.tb.add_scalar(f"{row['stage']}/{k}", float(v), it)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
