"""A study's figures, made to compare: the values of the compared axis (``compare_to``'s axis: methods, samplers)
are colours, the same in every figure, and each setting of the other axes (a dataset, a labeled count) is a group.

- ``dice_per_arm.png``: test Dice, a point per seed and mean ± std, the groups side by side.
- ``curves.png``: validation Dice and L_contrast against iterations, mean and band over seeds (the paper's Fig. 5),
  a column per group with every compared value on the same axes; a quantity is drawn only for arms that log it,
  and a panel without a line is left out.
- ``dice_vs_labeled.png``: test Dice against the number of labeled subjects (when that is an axis).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arco._io import atomic_path
from arco.study.collect import RunResult
from arco.study.spec import Arm, StudySpec

__all__ = ["write_figures", "labeled_axis", "compared_axis", "arm_groups", "arm_label", "CURVE_COLUMNS"]

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


def compared_axis(spec: StudySpec) -> str | None:
    """The axis whose values are compared in every figure (colours): the ``compare_to`` axis, else the first."""
    if spec.compare_to:
        return next(iter(spec.compare_to))
    return next(iter(spec.axes), None)


def arm_groups(spec: StudySpec) -> dict[str, list[Arm]]:
    """Arms grouped by the values of every axis except the compared one (a group per dataset, per labeled
    count, ...), in grid order; the key names the group (the study's name when there is one group)."""
    axis = compared_axis(spec)
    groups: dict[str, list[Arm]] = {}
    for arm in spec.arms():
        key = ", ".join(f"{a}={v}" for a, v in arm.values.items() if a != axis) or spec.name
        groups.setdefault(key, []).append(arm)
    return groups


def _colours(spec: StudySpec) -> dict[str, str]:
    """Arm name -> colour: one colour per value of the compared axis, the same in every panel and figure."""
    axis = compared_axis(spec)
    values = list(spec.axes[axis]) if axis else []
    out = {}
    for arm in spec.arms():
        v = arm.values.get(axis) if axis else None
        out[arm.name] = f"C{values.index(v) % 10}" if v in values else "C0"
    return out


def arm_label(spec: StudySpec, arm: Arm) -> str:
    """How figures name an arm: its value of the compared axis (``supervised``, ``sg``), else its name."""
    axis = compared_axis(spec)
    return arm.values.get(axis, arm.name) if axis else arm.name


def _dice_per_arm(spec: StudySpec, results: list[RunResult], path: Path) -> dict[str, list[str]]:
    """Groups side by side (a group per setting of the other axes), the compared values as colours in a group.
    Returns what the figure shows: the group labels on the x axis and the legend's entries."""
    plt = _plt()
    groups, colours = arm_groups(spec), _colours(spec)
    width = max(len(g) for g in groups.values())
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * width * len(groups) + 2.5), 4.0))
    labelled: set[str] = set()
    for g, arms in enumerate(groups.values()):
        for k, arm in enumerate(arms):
            vals = [r.mean["dice"] for r in results if r.arm == arm.name]
            if not vals:
                continue
            x = g + (k - (len(arms) - 1) / 2) * 0.8 / max(width, 1)
            jitter = np.linspace(-0.25, 0.25, len(vals)) * 0.8 / max(width, 1)
            label = arm_label(spec, arm)
            ax.scatter(np.full(len(vals), x) + jitter, vals, s=16, color=colours[arm.name], alpha=0.75,
                       label=None if label in labelled else label)  # fmt: skip
            labelled.add(label)
            sd = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
            ax.errorbar(x, np.mean(vals), yerr=sd, fmt="s", color="k", ms=4, capsize=2, zorder=3)
    ax.set_xticks(range(len(groups)), list(groups), rotation=20 if len(groups) > 3 else 0,
                  ha="right" if len(groups) > 3 else "center")  # fmt: skip
    ax.set(ylabel="test mean Dice")
    ax.set_title(f"{spec.name}\na point per seed; black square: mean ± std over seeds", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    legend = ax.legend(fontsize=7, title=compared_axis(spec), title_fontsize=7, loc="best") if labelled else None
    shown = {
        "groups": [t.get_text() for t in ax.get_xticklabels()],
        "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
    }
    _save(fig, path)
    return shown


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


def _curves(spec: StudySpec, results: list[RunResult], path: Path) -> list[str]:
    """Rows: the logged quantities; columns: the groups (a dataset, a labeled count); in each panel every arm
    of the group that logs the quantity, as mean and ± std band over seeds. Panels without a line are removed.
    Returns one line per panel drawn (``group: quantity: legend entries``), empty when nothing was logged."""
    plt = _plt()
    groups, colours = arm_groups(spec), _colours(spec)
    columns = [
        (c, label) for c, label in CURVE_COLUMNS if any(row.get(c) is not None for r in results for row in r.curves)
    ]
    if not columns:
        return []
    fig, grid = plt.subplots(len(columns), len(groups), figsize=(4.8 * len(groups), 3.3 * len(columns)),
                             squeeze=False)  # fmt: skip
    for j, (key, arms) in enumerate(groups.items()):
        names = {a.name for a in arms}
        ends = sorted({e for r in results if r.arm in names for e in r.stage_ends[:-1]})
        for i, (column, label) in enumerate(columns):
            ax = grid[i][j]
            for arm in arms:
                runs = [r for r in results if r.arm == arm.name]
                s = _series(runs, column)
                if s is None:
                    continue
                x, m, sd = s
                ax.plot(x, m, color=colours[arm.name], label=f"{arm_label(spec, arm)} (n={len(runs)})")
                ax.fill_between(x, m - sd, m + sd, color=colours[arm.name], alpha=0.2)
            if not ax.lines:
                fig.delaxes(ax)  # this group's arms do not log the quantity: no empty panel
                continue
            for e in ends:  # where a stage ends and the next begins
                ax.axvline(e, color="0.6", linestyle=":", linewidth=1)
            ax.set(xlabel="iteration (whole run; dotted: stage boundary)", ylabel=label)
            ax.set_title(key, fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    panels = [f"{ax.get_title()}: {ax.get_ylabel()}: " + ", ".join(t.get_text() for t in ax.get_legend().get_texts())
              for ax in fig.axes]  # fmt: skip
    _save(fig, path)
    return panels


def _dice_vs_labeled(spec: StudySpec, results: list[RunResult], axis: str, path: Path) -> None:
    plt = _plt()
    others: dict[tuple, list] = {}
    for arm in spec.arms():
        others.setdefault(tuple((a, v) for a, v in arm.values.items() if a != axis), []).append(arm)
    # Colours of the compared axis when each line is one of its values, else one colour per line.
    same = compared_axis(spec) != axis and len(spec.axes) == 2
    colours = _colours(spec)
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
            colour = colours[arms[0].name] if same else f"C{k % 10}"
            ax.errorbar(x, m, yerr=sd, marker="o", capsize=3, color=colour, label=label)
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
