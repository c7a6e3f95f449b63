"""Overlay PNGs (matplotlib Agg): one slice of a case with a colour per class, and qualitative panels that put
the image, the ground truth and several predictions of the same slice side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arco._io import atomic_path

__all__ = ["CLASS_COLORS", "PanelRow", "class_color", "pick_slice", "save_overlay", "save_panel"]

#: One colour per foreground class (class 1 first), cycled when there are more classes; chosen to stay apart
#: from each other and from a grey-scale image.
CLASS_COLORS = (
    "#e6194b",  # red
    "#3cb44b",  # green
    "#4363d8",  # blue
    "#ffe119",  # yellow
    "#f58231",  # orange
    "#911eb4",  # purple
    "#42d4f4",  # cyan
    "#f032e6",  # magenta
    "#bfef45",  # lime
    "#9a6324",  # brown
)


def class_color(c: int) -> str:
    """Colour of foreground class ``c`` (1-based)."""
    return CLASS_COLORS[(int(c) - 1) % len(CLASS_COLORS)]


def pick_slice(gt: np.ndarray) -> int:
    """Index along axis 0 of the slice with the most ground-truth foreground (0 when the GT is empty)."""
    gt = np.asarray(gt)
    if gt.ndim == 2:
        return 0
    return int(np.argmax((gt.reshape(gt.shape[0], -1) > 0).sum(axis=1)))


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    """Names of classes 1..C-1 (``class_names`` with or without the background entry)."""
    names = [str(n) for n in class_names] if class_names is not None else []
    if len(names) == num_classes:
        names = names[1:]
    if len(names) != num_classes - 1:
        names = [f"class {c}" for c in range(1, num_classes)]
    return names


def _class_legend(fig: Any, names: Sequence[str], extra: Sequence[Any] = (), **kwargs: Any) -> list[str]:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=class_color(c), edgecolor="none", label=n) for c, n in enumerate(names, start=1)]
    legend = fig.legend(handles=[*handles, *extra], fontsize=8, framealpha=0.85, **kwargs)
    return [t.get_text() for t in legend.get_texts()]


def save_overlay(
    out_png: str | os.PathLike,
    gt: np.ndarray,
    pred: np.ndarray,
    image: np.ndarray | None = None,
    title: str = "",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """Draw ``image`` in grey with the contours of each class in its own colour: ground truth solid, prediction
    dashed; a legend names the classes. Written atomically; returns the legend's entries.

    Args:
        out_png: output file.
        gt: ``(H, W)`` int label slice.
        pred: ``(H, W)`` int label slice.
        image: ``(H, W)`` float slice, or None (the GT is shown faintly instead).
        title: figure title (case, rank, Dice).
        num_classes: classes including background (default: from the labels).
        class_names: names with or without the background entry (default: ``class 1``, ...).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    gt, pred = np.asarray(gt), np.asarray(pred)
    background = np.asarray(image, dtype=np.float32) if image is not None else (gt > 0).astype(np.float32) * 0.3
    num_classes = int(num_classes or max(int(gt.max()), int(pred.max())) + 1)
    names = _names(class_names, num_classes)
    fig = Figure(figsize=(5.6, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.02, 0.02, 0.72, 0.9))
    ax.imshow(background, cmap="gray", interpolation="nearest")
    for c in range(1, num_classes):
        for mask, style in ((gt == c, "solid"), (pred == c, "dashed")):
            if mask.any() and not mask.all():
                ax.contour(
                    mask.astype(np.float32), levels=[0.5], colors=[class_color(c)], linewidths=1.4, linestyles=style
                )
    styles = [
        Line2D([], [], color="0.2", lw=1.5, label="ground truth"),
        Line2D([], [], color="0.2", lw=1.5, ls="--", label="prediction"),
    ]
    entries = _class_legend(fig, names, styles, loc="center right")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return entries


@dataclass
class PanelRow:
    """One row of a qualitative panel: a slice of one case and every arm's prediction of it.

    Attributes:
        label: the row's name (case, slice, why it was chosen).
        image: ``(H, W)`` float slice (or None).
        gt: ``(H, W)`` int label slice.
        preds: arm name -> ``(H, W)`` int label slice, in column order.
        dice: arm name -> the Dice shown in that arm's title.
    """

    label: str
    image: np.ndarray | None
    gt: np.ndarray
    preds: dict[str, np.ndarray]
    dice: dict[str, float] = field(default_factory=dict)


def _label_rgba(label: np.ndarray, num_classes: int, alpha: float) -> np.ndarray:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*label.shape, 4), dtype=np.float32)
    for c in range(1, num_classes):
        r, g, b, _ = to_rgba(class_color(c))
        rgba[label == c] = (r, g, b, alpha)
    return rgba


def save_panel(
    out_png: str | os.PathLike,
    rows: Sequence[PanelRow],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    title: str = "",
    alpha: float = 0.45,
) -> dict[str, Any]:
    """Image, ground truth and every arm's prediction side by side, a row per case, classes filled in their
    colours over the image with a legend of the class names; each prediction's title gives the arm and its Dice.

    Args:
        out_png: output file (written atomically).
        rows: the rows; every row must name the same arms.
        num_classes: classes including background.
        class_names: names with or without the background entry.
        title: the figure's title.
        alpha: opacity of the class colours.

    Returns:
        ``{"titles": [[title of each panel] per row], "arms": [...], "rows": [row labels], "legend": [class
        names]}``: what the figure shows, read from its axes and legend.

    Raises:
        ValueError: no rows, or rows that name different arms.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("save_panel(): rows is empty; give at least one case")
    arms = list(rows[0].preds)
    for r in rows:
        if list(r.preds) != arms:
            raise ValueError(f"save_panel(): every row must show the arms {arms}; row {r.label!r} has {list(r.preds)}")
    names = _names(class_names, num_classes)
    ncols = 2 + len(arms)
    fig = Figure(figsize=(2.3 * ncols, 2.75 * len(rows) + 0.9), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(rows), ncols, squeeze=False)
    for i, row in enumerate(rows):
        image = (
            np.asarray(row.image, dtype=np.float32)
            if row.image is not None
            else np.zeros(np.shape(row.gt), dtype=np.float32)
        )
        panels = [("image", None), ("ground truth", row.gt)]
        panels += [(f"{a}\nDice {row.dice[a]:.3f}" if a in row.dice else a, row.preds[a]) for a in arms]
        for j, (text, label) in enumerate(panels):
            ax = grid[i][j]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            if label is not None:
                ax.imshow(_label_rgba(np.asarray(label), num_classes, alpha), interpolation="nearest")
            ax.set_title(text, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        grid[i][0].set_ylabel(row.label, fontsize=8)
    legend = _class_legend(fig, names, loc="outside lower center", ncol=min(len(names), 8))
    if title:
        fig.suptitle(title, fontsize=10)
    meta = {
        "titles": [[grid[i][j].get_title() for j in range(ncols)] for i in range(len(rows))],
        "arms": arms,
        "rows": [grid[i][0].get_ylabel() for i in range(len(rows))],
        "legend": legend,
    }
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return meta
