"""Training curves as PNG (matplotlib Agg).

- :func:`plot_training_curves`: one run (``arco curves RUN``, and every stage's ``curves.png``): each logged loss
  on its own panel with its own scale (L_contrast near 4 would flatten losses near 0.1 on a shared axis), and
  validation Dice.
- :func:`plot_compared_curves`: several runs on the same axes, a colour per run, a panel per quantity; a loss is
  drawn only for the runs that log it, and a quantity no run logs gets no panel.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from arco._io import atomic_path

__all__ = ["read_log", "read_run_log", "curve_panels", "plot_training_curves", "plot_compared_curves", "LOSS_LABELS"]

#: Axis labels of the logged columns (others are shown by their column name).
LOSS_LABELS = {
    "val_dice": "validation Dice",
    "loss": "total loss",
    "loss_sup": "L_sup",
    "loss_contrast": "L_contrast",
    "loss_unsup": "L_unsup",
    "loss_nn": "L_nn",
    "loss_inst": "L_inst",
    "loss_eqv": "L_eqv",
}


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


def _stage_logs(run: Path) -> list[Path]:
    """``run/log.csv``, or the ``log.csv`` of each stage folder of a multi-stage run, in training order."""
    if (run / "log.csv").is_file():
        return [run / "log.csv"]
    # A stage starts after the one before it has finished, so the last write of its log comes later.
    return sorted(run.glob("*/log.csv"), key=lambda p: p.stat().st_mtime)


def read_run_log(run: str | os.PathLike) -> tuple[list[str], list[dict[str, float | str]], list[int]]:
    """A run's log over all its stages: ``(columns, rows, stage_ends)`` with ``iteration`` counted from the start
    of the run and numbers as floats (missing cells left out). ``run`` is a stage folder, a run folder holding
    stage folders, or a ``log.csv``.

    Raises:
        FileNotFoundError: no ``log.csv`` there.
    """
    path = Path(run)
    logs = [path] if path.is_file() else _stage_logs(path)
    if not logs:
        raise FileNotFoundError(f"no training log under {path}; give a run folder written by `arco train`")
    columns: list[str] = []
    rows: list[dict[str, float | str]] = []
    ends: list[int] = []
    offset = 0
    for log in logs:
        cols, raw = read_log(log)
        columns += [c for c in cols if c not in columns]
        last = 0
        for r in raw:
            row: dict[str, float | str] = {"stage": r.get("stage") or log.parent.name}
            for c in cols:
                v = _number(r.get(c)) if c != "stage" else None
                if v is not None:
                    row[c] = v
            last = int(row.get("iteration", last))  # type: ignore[arg-type]
            row["iteration"] = offset + last
            rows.append(row)
        offset += last
        ends.append(offset)
    return columns, rows, ends


def _quantities(columns: Sequence[str]) -> list[str]:
    """Losses first (total, then the method's own in log order), then validation Dice."""
    losses = [c for c in columns if c.startswith("loss")]
    return losses + (["val_dice"] if "val_dice" in columns else [])


def _grid(n: int) -> tuple[int, int]:
    cols = 1 if n == 1 else 2 if n <= 4 else 3
    return math.ceil(n / cols), cols


def _new_figure(n: int, width: float = 4.4, height: float = 2.9):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nrows, ncols = _grid(n)
    fig = Figure(figsize=(width * ncols, height * nrows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)  # no empty panels
    return fig, list(axes[:n])


def _save(fig, out_png: str | os.PathLike) -> Path:
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    return out


def curve_panels(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The panels of a run's curves: ``(shown, zero)``. Every loss column with a number gets a panel, then
    ``val_dice``; a loss that is 0 throughout (a term whose weight is 0) is listed in ``zero`` instead."""
    logged = [q for q in _quantities(columns) if any(q in r for r in rows)]
    zero = [q for q in logged if q != "val_dice" and all(r.get(q, 0.0) == 0.0 for r in rows)]
    return ([q for q in logged if q not in zero] or logged), zero


def plot_training_curves(log_csv: str | os.PathLike, out_png: str | os.PathLike) -> Path:
    """Plot every loss column and ``val_dice`` of a training log against iteration, each on its own panel.

    Empty cells (a column not logged at that row) and columns without a number are skipped. ``log_csv`` may be
    a run folder holding stage folders (ARCO's ``pretrain`` and ``finetune``): the stages are drawn one after
    the other, a dotted line where one ends. The PNG is written atomically.

    Args:
        log_csv: ``<run>/log.csv`` with an ``iteration`` column, loss columns and optionally ``val_dice``; or a
            run folder.
        out_png: output PNG path.

    Returns:
        The written path.

    Raises:
        FileNotFoundError: ``log_csv`` is missing.
        ValueError: no ``iteration`` column, or neither a loss column nor ``val_dice`` holds a number.
    """
    columns, rows, ends = read_run_log(log_csv)
    stages = list(dict.fromkeys(str(r["stage"]) for r in rows))
    shown, zero = curve_panels(columns, rows)
    if not shown:
        raise ValueError(f"{log_csv} holds no numbers in any loss column or val_dice (columns: {columns})")
    fig, axes = _new_figure(len(shown))
    for ax, q in zip(axes, shown):
        for k, stage in enumerate(stages):
            pts = [(r["iteration"], r[q]) for r in rows if r["stage"] == stage and q in r]
            if pts:
                xs, ys = zip(*pts)
                label = stage if len(stages) > 1 else None
                ax.plot(xs, ys, color=f"C{k}", marker="o" if q == "val_dice" else None, ms=3, lw=1.2, label=label)
        for e in ends[:-1]:
            ax.axvline(e, color="0.6", ls=":", lw=1)
        ax.set_title(LOSS_LABELS.get(q, q), fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    name = Path(log_csv).name if Path(log_csv).is_dir() else Path(log_csv).parent.name
    note = f" ({', '.join(LOSS_LABELS.get(q, q) for q in zero)}: 0 throughout, not drawn)" if zero else ""
    fig.suptitle(f"training curves: {name}{note}", fontsize=10)
    return _save(fig, out_png)


def plot_compared_curves(
    runs: Mapping[str, str | os.PathLike],
    out_png: str | os.PathLike,
    quantities: Sequence[str] | None = None,
    title: str = "",
) -> list[str]:
    """Several runs on the same axes: a panel per quantity (validation Dice, then each loss), a colour per run.

    A run is drawn on a panel only when it logs that quantity (the supervised baseline has no L_contrast); a
    quantity no run logs, or that is 0 throughout in every run (a term switched off), gets no panel. Iterations
    count from the start of each run, so ARCO's two stages follow each other (dotted: where a run's stage ends).

    Args:
        runs: name -> run folder (holding ``log.csv`` or stage folders).
        out_png: output PNG.
        quantities: the columns to draw (default: ``val_dice``, ``loss_sup`` and every other loss).
        title: the figure's title.

    Returns:
        The quantities drawn, one per panel.

    Raises:
        ValueError: no run logs any of the quantities.
    """
    logs = {name: read_run_log(path) for name, path in runs.items()}
    if quantities is None:
        seen: list[str] = []
        for cols, _, _ in logs.values():
            seen += [c for c in _quantities(cols) if c not in seen and c != "loss"]
        quantities = ["val_dice", *[q for q in seen if q != "val_dice"]] if "val_dice" in seen else seen
    # A quantity is drawn where some run logs a number for it that is not 0 throughout (a weight set to 0).
    shown = [
        q
        for q in quantities
        if any(r.get(q, 0.0) != 0.0 for _, rows, _ in logs.values() for r in rows)
        or (q == "val_dice" and any(q in r for _, rows, _ in logs.values() for r in rows))
    ]
    if not shown:
        raise ValueError(f"none of the runs {list(runs)} logs any of {list(quantities)}")
    fig, axes = _new_figure(len(shown))
    for ax, q in zip(axes, shown):
        for k, (name, (_, rows, ends)) in enumerate(logs.items()):
            pts = [(r["iteration"], r[q]) for r in rows if q in r]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color=f"C{k % 10}", lw=1.3, marker="o" if q == "val_dice" else None, ms=2.5, label=name)
            for e in ends[:-1]:
                ax.axvline(e, color=f"C{k % 10}", ls=":", lw=0.8, alpha=0.7)
        ax.set_title(LOSS_LABELS.get(q, q), fontsize=9)
        ax.set_xlabel("iteration (whole run)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, out_png)
    return list(shown)
