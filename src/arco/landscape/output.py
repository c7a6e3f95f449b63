"""Files of ``arco landscape``: figures (matplotlib Agg, no global pyplot state), CSV, NPY and a JSON summary, all
written atomically.

- pixels, per slice ``pixels_<case>_s<k>``: ``.png`` (image, ground truth, prediction, heat map, 3-D surface),
  ``.npy`` (the ``(H, W)`` float32 loss) and ``.csv`` (``row, col, label, prediction, loss``); ``pixels.json``.
- weights: ``weights_contour.png``, ``weights_surface.png``, ``weights_surface.csv`` (``alpha, beta`` and one
  column per loss) and ``weights.json`` (centre values, sharpness, radius, settings).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arco._io import atomic_path, atomic_write_bytes, atomic_write_text
from arco.landscape.pixels import PixelLandscape
from arco.landscape.weights import WeightLandscape

__all__ = ["write_pixels", "write_weights", "plot_pixels", "plot_weights"]

#: Label maps: background black, class c >= 1 in tab10's colour c (as the panels of `arco evaluate`'s overlays).
_LABEL_COLOURS = ["#000000", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                  "#17becf"]  # fmt: skip


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _stem(item: PixelLandscape) -> str:
    return f"pixels_{re.sub(r'[^A-Za-z0-9._-]+', '_', item.case_id)}_s{item.slice_index}"


def plot_pixels(item: PixelLandscape, path: Path, title: str = "") -> None:
    """Image, ground truth, prediction, the loss as a heat map and as a 3-D surface (z = loss at each pixel)."""
    fig = _figure(20, 5.0)
    grid = fig.add_gridspec(1, 5, width_ratios=[1, 1, 1, 1.25, 2.0])
    classes = max(len(item.class_names), int(item.label.max()) + 1, int(item.prediction.max()) + 1)
    loss = np.asarray(item.loss, dtype=np.float64)
    finite = loss[np.isfinite(loss)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    from matplotlib.colors import ListedColormap

    labels = ListedColormap(_LABEL_COLOURS[: max(classes, 2)])
    panels = (("image", item.image, "gray", False), ("ground truth", item.label, labels, True),
              ("prediction", item.prediction, labels, True))  # fmt: skip
    for i, (name, arr, cmap, discrete) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        kw = {"vmin": 0, "vmax": labels.N - 1, "interpolation": "nearest"} if discrete else {}
        ax.imshow(arr, cmap=cmap, **kw)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 3])
    im = ax.imshow(np.ma.masked_invalid(loss), cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
    ax.set_title("L_contrast per pixel", fontsize=9)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax = fig.add_subplot(grid[0, 4], projection="3d")
    h, w = loss.shape
    yy, xx = np.mgrid[0:h, 0:w]
    z = np.where(np.isfinite(loss), loss, low)
    ax.plot_surface(xx, yy, z, cmap="viridis", vmin=low, vmax=high, rcount=min(h, 96), ccount=min(w, 96),
                    linewidth=0, antialiased=False)  # fmt: skip
    ax.set(xlabel="x", ylabel="y", zlabel="loss")
    ax.invert_yaxis()  # image orientation: row 0 at the back
    ax.view_init(elev=40, azim=-60)
    ax.set_box_aspect((1, 1, 0.6), zoom=1.05)
    means = ", ".join(f"{k} {v:.3f}" for k, v in item.class_means().items() if math.isfinite(v))
    head = title or f"{item.case_id}, slice {item.slice_index}"
    fig.suptitle(f"{head}: per-pixel L_contrast ({item.strategy} draws from the banks, seed {item.seed}); "
                 f"class means: {means}", fontsize=9)  # fmt: skip
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.02, wspace=0.1)
    _save(fig, path)


def write_pixels(items: Sequence[PixelLandscape], out: str | Path, meta: dict | None = None) -> list[Path]:
    """Write every slice's PNG, NPY and CSV and ``pixels.json``; returns the PNG paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs, summary = [], []
    for item in items:
        stem = _stem(item)
        buf = io.BytesIO()
        np.save(buf, item.loss.astype(np.float32))
        atomic_write_bytes(out / f"{stem}.npy", buf.getvalue())
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["row", "col", "label", "prediction", "loss"])
        rows, cols = np.indices(item.loss.shape)
        for r, c, y, p, v in zip(rows.flat, cols.flat, item.label.flat, item.prediction.flat, item.loss.flat):
            writer.writerow([r, c, int(y), int(p), f"{v:.6g}"])
        atomic_write_text(out / f"{stem}.csv", text.getvalue())
        plot_pixels(item, out / f"{stem}.png")
        pngs.append(out / f"{stem}.png")
        means = {k: (None if math.isnan(v) else v) for k, v in item.class_means().items()}
        summary.append({"case": item.case_id, "slice": item.slice_index, "files": stem, "class_means": means})
    atomic_write_text(out / "pixels.json", json.dumps({**(meta or {}), "slices": summary}, indent=2) + "\n")
    return pngs


def _log_scale(values: np.ndarray) -> bool:
    """Whether a surface spans more than a decade (then contours are log-spaced and the 3-D plot shows log10)."""
    finite = values[np.isfinite(values)]
    return bool(finite.size) and finite.min() > 0 and finite.max() / finite.min() > 10


def plot_weights(result: WeightLandscape, contour: Path, surface: Path, title: str = "") -> None:
    """Contour and 3-D surface plots, one panel per loss, with the sharpness radius drawn on the contours. A loss that
    spans more than a decade over the grid gets log-spaced contours and a log10 z-axis."""
    names = list(result.losses)
    a, b = np.meshgrid(result.coords, result.coords, indexing="ij")
    sharp = result.sharpness()
    head = title or Path(result.checkpoint).parent.parent.name
    fig = _figure(5.2 * len(names), 4.6)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        v = result.losses[name]
        finite = v[np.isfinite(v)]
        levels = np.geomspace(finite.min(), finite.max(), 20) if _log_scale(v) else 20
        cs = ax.contour(a, b, v, levels=levels, cmap="viridis")
        ax.clabel(cs, inline=True, fontsize=6, fmt="%.3g")
        ax.add_patch(_circle(result.radius))
        ax.plot([0], [0], "r+", ms=10)
        ax.set(xlabel="α (direction 1)", ylabel="β (direction 2)", aspect="equal")
        ax.set_title(f"{name}: centre {result.centre()[name]:.4g}, sharpness(r={result.radius:g}) "
                     f"{sharp[name]:.4g}", fontsize=8)  # fmt: skip
    fig.suptitle(f"{head}: loss around the final weights (filter-normalised directions, seed {result.seed})",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    _save(fig, contour)
    fig = _figure(5.4 * len(names), 4.8)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1, projection="3d")
        v = result.losses[name]
        log = _log_scale(v)
        z = np.log10(v) if log else v
        ax.plot_surface(a, b, np.where(np.isfinite(z), z, np.nan), cmap="viridis", linewidth=0.2, edgecolor="k",
                        alpha=0.9)  # fmt: skip
        ax.set(xlabel="α", ylabel="β", zlabel=f"log10 {name}" if log else name)
        ax.set_title(f"{name} (sharpness {sharp[name]:.4g})", fontsize=9)
    fig.suptitle(f"{head}: loss surface around the final weights (seed {result.seed})", fontsize=9)
    fig.tight_layout()
    _save(fig, surface)


def _circle(radius: float):
    from matplotlib.patches import Circle

    return Circle((0, 0), radius, fill=False, ls="--", lw=0.8, color="r")


def write_weights(result: WeightLandscape, out: str | Path, meta: dict | None = None) -> tuple[Path, Path, Path]:
    """``weights_surface.csv``, ``weights_contour.png``, ``weights_surface.png`` and ``weights.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(result.losses)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["alpha", "beta", *names])
    for i, a in enumerate(result.coords):
        for j, b in enumerate(result.coords):
            writer.writerow([f"{a:.6g}", f"{b:.6g}", *(f"{result.losses[n][i, j]:.8g}" for n in names)])
    csv_path = out / "weights_surface.csv"
    atomic_write_text(csv_path, text.getvalue())
    contour, surface = out / "weights_contour.png", out / "weights_surface.png"
    plot_weights(result, contour, surface)
    summary = {
        **(meta or {}),
        "checkpoint": result.checkpoint,
        "stage_method": result.stage_method,
        "seed": result.seed,
        "steps": len(result.coords),
        "span": float(result.coords[-1]),
        "radius": result.radius,
        "centre": result.centre(),
        "sharpness": result.sharpness(),
        "seconds": round(result.seconds, 2),
        "notes": result.notes,
    }
    atomic_write_text(out / "weights.json", json.dumps(summary, indent=2) + "\n")
    return csv_path, contour, surface
