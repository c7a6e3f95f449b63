"""Training curves: logged losses and validation Dice against iteration, as a PNG (matplotlib Agg)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from arco._io import atomic_path

__all__ = ["read_log", "plot_training_curves"]


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_log(log_csv: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """Read a training ``log.csv``; return ``(columns, rows)``; raise if missing or without ``iteration``."""
    path = Path(log_csv)
    if not path.is_file():
        raise FileNotFoundError(f"training log {path} does not exist; give a run folder written by `arco train`")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    if "iteration" not in columns:
        raise ValueError(f"{path} has no 'iteration' column (columns: {columns}); is it an arco training log?")
    return columns, rows


def plot_training_curves(log_csv: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Plot the loss columns (top) and ``val_dice`` (bottom) of a training log against iteration.

    Empty cells (a column not logged at that row) are skipped. When the log holds several stages (``stage``
    column, e.g. ARCO pre-training then fine-tuning), each stage gets its own lines. The PNG is written
    atomically.

    Args:
        log_csv: ``<run>/log.csv`` with an ``iteration`` column, loss columns and optionally ``val_dice``.
        out_png: output PNG path.

    Returns:
        The written path.

    Raises:
        FileNotFoundError: ``log_csv`` is missing.
        ValueError: no ``iteration`` column, or neither a loss column nor ``val_dice`` holds a number.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns, rows = read_log(log_csv)
    # The log's columns are the method's declared loss names (arco.engine.logger), in its own order.
    losses = [c for c in columns if c.startswith("loss")]
    stages = list(dict.fromkeys(r.get("stage") or "" for r in rows))

    def series(col: str, stage: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in rows:
            x, y = _number(r.get("iteration")), _number(r.get(col))
            if x is not None and y is not None and (r.get("stage") or "") == stage:
                xs.append(x)
                ys.append(y)
        return xs, ys

    fig = Figure(figsize=(8, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_dice = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    plotted = 0
    for ax, cols in ((ax_loss, losses), (ax_dice, ["val_dice"] if "val_dice" in columns else [])):
        for col in cols:
            for stage in stages:
                xs, ys = series(col, stage)
                if xs:
                    label = f"{col} ({stage})" if len(stages) > 1 and stage else col
                    ax.plot(xs, ys, marker="o" if col == "val_dice" else None, ms=3, lw=1.2, label=label)
                    plotted += 1
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if not plotted:
        raise ValueError(f"{log_csv} holds no numbers in any loss column or val_dice (columns: {columns})")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title(f"training curves: {Path(log_csv).parent.name}")
    ax_dice.set_ylabel("validation Dice")
    ax_dice.set_xlabel("iteration")
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out
