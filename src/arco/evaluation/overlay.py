"""Overlay PNGs: one slice of a case with ground-truth and predicted contours (matplotlib Agg)."""

from __future__ import annotations

import os

import numpy as np

from arco._io import atomic_path

__all__ = ["GT_COLOR", "PRED_COLOR", "pick_slice", "save_overlay"]

GT_COLOR = "#00d000"  # green
PRED_COLOR = "#ff2020"  # red


def pick_slice(gt: np.ndarray) -> int:
    """Index along axis 0 of the slice with the most ground-truth foreground (0 when the GT is empty)."""
    gt = np.asarray(gt)
    if gt.ndim == 2:
        return 0
    return int(np.argmax((gt.reshape(gt.shape[0], -1) > 0).sum(axis=1)))


def save_overlay(
    out_png: str | os.PathLike,
    gt: np.ndarray,
    pred: np.ndarray,
    image: np.ndarray | None = None,
    title: str = "",
    num_classes: int | None = None,
) -> None:
    """Draw ``image`` in grey with GT (green) and prediction (red) contours of each class; write atomically.

    Args:
        out_png: output file.
        gt: ``(H, W)`` int label slice.
        pred: ``(H, W)`` int label slice.
        image: ``(H, W)`` float slice, or None (the GT is shown faintly instead).
        title: figure title (case, rank, Dice).
        num_classes: classes including background (default: from the labels).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    gt, pred = np.asarray(gt), np.asarray(pred)
    background = np.asarray(image, dtype=np.float32) if image is not None else (gt > 0).astype(np.float32) * 0.3
    num_classes = int(num_classes or max(int(gt.max()), int(pred.max())) + 1)
    fig = Figure(figsize=(5, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(background, cmap="gray", interpolation="nearest")
    for c in range(1, num_classes):
        for mask, color, style in ((gt == c, GT_COLOR, "solid"), (pred == c, PRED_COLOR, "dashed")):
            if mask.any() and not mask.all():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.2, linestyles=style)
    ax.legend(
        handles=[
            Line2D([], [], color=GT_COLOR, lw=1.5, label="ground truth"),
            Line2D([], [], color=PRED_COLOR, lw=1.5, ls="--", label="prediction"),
        ],
        loc="lower right",
        fontsize=8,
        framealpha=0.7,
    )
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
