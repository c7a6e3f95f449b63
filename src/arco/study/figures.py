"""A study's figures: test Dice per arm (a point per seed), validation Dice and L_contrast against iterations as
mean and band over seeds (the paper's Fig. 5), and test Dice against the number of labeled subjects."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arco._io import atomic_path
from arco.study.collect import RunResult
from arco.study.spec import StudySpec

__all__ = ["write_figures", "labeled_axis", "CURVE_COLUMNS"]

#: Logged columns drawn against iterations when any run logs them.
CURVE_COLUMNS = (("val_dice", "validation Dice"), ("loss_contrast", "L_contrast"))


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def labeled_axis(spec: StudySpec) -> str | None:
    """The grid axis whose every value sets ``data.labeled`` (None when there is none)."""
    for axis, values in spec.axes.items():
        if all(any(o.split("=", 1)[0].strip() == "data.labeled" for o in v.overrides) for v in values.values()):
            return axis
    return None


def _labeled_value(spec: StudySpec, axis: str, value: str) -> float:
    for o in spec.axes[axis][value].overrides:
        key, _, v = o.partition("=")
        if key.strip() == "data.labeled":
            try:
                return float(v)
            except ValueError:
                return float("nan")
    return float("nan")


def _dice_per_arm(spec: StudySpec, results: list[RunResult], path: Path) -> None:
    plt = _plt()
    arms = [a.name for a in spec.arms()]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(arms) + 2), 3.8))
    for i, arm in enumerate(arms):
        vals = [r.mean["dice"] for r in results if r.arm == arm]
        if not vals:
            continue
        ax.scatter(np.full(len(vals), i) + np.linspace(-0.12, 0.12, len(vals)), vals, s=18, color="C0", alpha=0.8)
        ax.errorbar(i + 0.3, np.mean(vals), yerr=np.std(vals, ddof=1) if len(vals) > 1 else 0, fmt="s", color="k", ms=4)
    ax.set_xticks(
        range(len(arms)), arms, rotation=45 if len(arms) > 4 else 0, ha="right" if len(arms) > 4 else "center"
    )
    ax.set(ylabel="test mean Dice")
    ax.set_title(f"{spec.name}: a point per seed, square = mean ± std", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


def _series(runs: list[RunResult], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and std over runs of ``column`` at the iterations every run logged it."""
    per_run = [{row["iteration"]: row[column] for row in r.curves if row.get(column) is not None} for r in runs]
    per_run = [p for p in per_run if p]
    if not per_run:
        return None
    common = sorted(set.intersection(*(set(p) for p in per_run)))
    if not common:
        return None
    values = np.array([[p[i] for i in common] for p in per_run], dtype=np.float64)
    std = values.std(axis=0, ddof=1) if len(per_run) > 1 else np.zeros(len(common))
    return np.asarray(common), values.mean(axis=0), std


def _curves(spec: StudySpec, results: list[RunResult], path: Path) -> bool:
    """Rows: the logged columns; columns: settings of the other axes; a line per value of the first axis."""
    plt = _plt()
    columns = [
        (c, label) for c, label in CURVE_COLUMNS if any(row.get(c) is not None for r in results for row in r.curves)
    ]
    if not columns:
        return False
    axes = list(spec.axes)
    first = axes[0] if axes else None
    groups: dict[tuple, list] = {}
    for arm in spec.arms():
        groups.setdefault(tuple((a, v) for a, v in arm.values.items() if a != first), []).append(arm)
    fig, grid = plt.subplots(len(columns), len(groups), figsize=(4.6 * len(groups), 3.2 * len(columns)), squeeze=False)
    for j, (key, arms) in enumerate(groups.items()):
        for i, (column, label) in enumerate(columns):
            ax = grid[i][j]
            for k, arm in enumerate(arms):
                s = _series([r for r in results if r.arm == arm.name], column)
                if s is None:
                    continue
                x, m, sd = s
                n = sum(r.arm == arm.name for r in results)
                name = arm.values.get(first, arm.name) if first else arm.name
                ax.plot(x, m, color=f"C{k}", label=f"{name} (n={n})")
                ax.fill_between(x, m - sd, m + sd, color=f"C{k}", alpha=0.2)
            ends = sorted({e for r in results if r.arm in {a.name for a in arms} for e in r.stage_ends[:-1]})
            for e in ends:  # where a stage ends and the next begins
                ax.axvline(e, color="0.6", linestyle=":", linewidth=1)
            ax.set(xlabel="iteration (whole run; dotted: stage boundary)", ylabel=label)
            ax.set_title(", ".join(f"{a}={v}" for a, v in key) or spec.name, fontsize=9)
            ax.grid(True, alpha=0.3)
            if ax.has_data():
                ax.legend(fontsize=7)
    _save(fig, path)
    return True


def _dice_vs_labeled(spec: StudySpec, results: list[RunResult], axis: str, path: Path) -> None:
    plt = _plt()
    others: dict[tuple, list] = {}
    for arm in spec.arms():
        others.setdefault(tuple((a, v) for a, v in arm.values.items() if a != axis), []).append(arm)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for k, (key, arms) in enumerate(others.items()):
        pts = []
        for arm in arms:
            vals = [r.mean["dice"] for r in results if r.arm == arm.name]
            if vals:
                x = _labeled_value(spec, axis, arm.values[axis])
                pts.append((x, np.mean(vals), np.std(vals, ddof=1) if len(vals) > 1 else 0.0))
        if pts:
            pts.sort()
            x, m, sd = map(np.asarray, zip(*pts))
            label = ", ".join(v for _, v in key) or "all"
            ax.errorbar(x, m, yerr=sd, marker="o", capsize=3, color=f"C{k % 10}", label=label)
    ax.set(xlabel="labeled subjects (data.labeled)", ylabel="test mean Dice (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def write_figures(spec: StudySpec, results: Sequence[RunResult], out: Path) -> list[str]:
    """Write the PNGs into ``out``; returns their file names."""
    results = list(results)
    if not results:
        return []
    names = ["dice_per_arm.png"]
    _dice_per_arm(spec, results, out / names[0])
    if _curves(spec, results, out / "curves.png"):
        names.append("curves.png")
    axis = labeled_axis(spec)
    if axis is not None:
        _dice_vs_labeled(spec, results, axis, out / "dice_vs_labeled.png")
        names.append("dice_vs_labeled.png")
    return names
