"""Reading a study's finished runs back: test metrics of the selected and of the last checkpoint (from each run's
cached evaluations), validation Dice and where it peaked, length, time and training curves; writing
``results.csv``, ``per_case.csv`` and ``per_case_last.csv``."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text
from arco.study.plan import EVALUATION, EVALUATION_LAST
from arco.study.spec import RunSpec

__all__ = ["RunResult", "collect_run", "write_results", "write_per_case", "axis_column", "METRICS"]

METRICS = ("dice", "jaccard", "hd95", "asd")


class RunResult:
    """One finished run: per-class test means and per-case rows of the selected checkpoint (``last_*``: of the
    last checkpoint), validation Dice and the iteration of the selected checkpoint counted from the start of the run
    (``best_iteration``), iterations, seconds, curves."""

    def __init__(self, run: RunSpec, axes: Sequence[str]) -> None:
        self.run = run
        self.axes = {a: run.arm.values.get(a, "") for a in axes}
        self.per_class: dict[str, dict[str, float]] = {}
        self.mean: dict[str, float] = {}
        self.cases: list[dict[str, Any]] = []
        self.val_dice: float | None = None
        self.best_iteration: int | None = None
        self.last_per_class: dict[str, dict[str, float]] = {}
        self.last_mean: dict[str, float] = {}
        self.last_cases: list[dict[str, Any]] = []
        self.iterations = 0
        self.train_seconds = 0.0
        self.curves: list[dict[str, Any]] = []
        self.stage_ends: list[int] = []

    @property
    def arm(self) -> str:
        return self.run.arm.name

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def best_fraction(self) -> float | None:
        """Where the selected checkpoint lies in the run's schedule (its iteration / the run's iterations)."""
        if self.best_iteration is None or not self.iterations:
            return None
        return self.best_iteration / self.iterations

    def case_dice(self, checkpoint: str = "best") -> dict[str, float]:
        """Per test case: the mean Dice over foreground classes (of the ``best`` or the ``last`` checkpoint)."""
        acc: dict[str, list[float]] = {}
        for r in self.cases if checkpoint == "best" else self.last_cases:
            acc.setdefault(r["case"], []).append(float(r["dice"]))
        return {c: sum(v) / len(v) for c, v in acc.items()}


def _float(text: str) -> float | None:
    if text in ("", None):
        return None
    v = float(text)
    return v if math.isfinite(v) else None


def _curves(stage_dirs: list[Path]) -> list[dict[str, Any]]:
    """The run's log rows over all its stages, ``iteration`` counted from the start of the run."""
    rows: list[dict[str, Any]] = []
    offset = 0
    for folder in stage_dirs:
        path = folder / "log.csv"
        if path.is_file():
            with open(path, newline="") as fh:
                for r in csv.DictReader(fh):
                    row = {k: _float(v) if k != "stage" else v for k, v in r.items()}
                    row["iteration"] = offset + int(row["iteration"] or 0)
                    rows.append(row)
        summary = json.loads((folder / "summary.json").read_text())
        offset += int(summary.get("iterations", 0))
    return rows


def collect_run(run: RunSpec, axes: Sequence[str]) -> RunResult:
    """Read a finished, evaluated run folder (raises FileNotFoundError when it is not)."""
    res = RunResult(run, axes)
    res.per_class, res.mean, res.cases = _evaluation(run.folder / EVALUATION)
    if (run.folder / EVALUATION_LAST / "summary.json").is_file():
        res.last_per_class, res.last_mean, res.last_cases = _evaluation(run.folder / EVALUATION_LAST)
    stage_dirs = [run.folder / s.name for s in run.config.stages]
    for folder in stage_dirs:
        s = json.loads((folder / "summary.json").read_text())
        res.iterations += int(s.get("iterations", 0))
        res.stage_ends.append(res.iterations)
        res.train_seconds += float(s.get("wall_seconds", 0.0))
    last = json.loads((stage_dirs[-1] / "summary.json").read_text())
    res.val_dice = last.get("best_val_dice")
    if last.get("best_iteration") is not None and int(last["best_iteration"]) >= 0:
        offset = res.stage_ends[-2] if len(res.stage_ends) > 1 else 0  # the stages before the last one
        res.best_iteration = offset + int(last["best_iteration"])
    res.curves = _curves(stage_dirs)
    return res


def _evaluation(folder: Path) -> tuple[dict[str, dict[str, float]], dict[str, float], list[dict[str, Any]]]:
    """(per-class means, mean over classes, per-case rows) of a cached evaluation folder."""
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "per_case.csv", newline="") as fh:
        cases = list(csv.DictReader(fh))
    return {n: dict(e["mean"]) for n, e in summary["per_class"].items()}, dict(summary["mean"]), cases


def _csv(header: Sequence[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in header})
    return buf.getvalue()


def axis_column(axis: str) -> str:
    """The CSV and table column of a study axis: an axis called ``arm`` is written as ``arm_axis``, so that the ``arm``
    column keeps the run's arm name (``b0_supervised``, not the axis value ``supervised``)."""
    return "arm_axis" if axis == "arm" else axis


def _axis_values(r: RunResult) -> dict[str, str]:
    return {axis_column(a): v for a, v in r.axes.items()}


def write_results(results: list[RunResult], axes: Sequence[str], path: Path) -> None:
    """``results.csv``: one row per run and class (then ``class = mean``: the mean over foreground classes); the
    metrics of the selected checkpoint, then ``dice_last`` (the last checkpoint's Dice) and where the selected
    checkpoint lies (``best_iteration`` counted from the start of the run)."""
    header = ["arm", *map(axis_column, axes), "seed", "class", *METRICS, "dice_last", "val_dice", "best_iteration",
              "iterations", "train_seconds"]  # fmt: skip
    rows = []
    for r in results:
        common = {"arm": r.arm, **_axis_values(r), "seed": r.seed, "val_dice": r.val_dice, "iterations": r.iterations}
        common.update(train_seconds=round(r.train_seconds, 1), best_iteration=r.best_iteration)
        last = {**r.last_per_class, "mean": r.last_mean}
        for name, m in [*r.per_class.items(), ("mean", r.mean)]:
            rows.append({**common, "class": name, **{k: m.get(k) for k in METRICS},
                         "dice_last": last.get(name, {}).get("dice")})  # fmt: skip
    atomic_write_text(path, _csv(header, rows))


def write_per_case(results: list[RunResult], axes: Sequence[str], path: Path, checkpoint: str = "best") -> None:
    """``per_case.csv``: every run's per-case, per-class test rows with the arm, axes and seed in front (of the
    ``last`` checkpoint: ``per_case_last.csv``)."""
    extra: list[str] = []
    for r in results:
        cases = r.cases if checkpoint == "best" else r.last_cases
        for k in cases[0] if cases else ():
            if k not in ("case", "class") and k not in extra:
                extra.append(k)
    header = ["arm", *map(axis_column, axes), "seed", "case", "class", *extra]
    rows = [{"arm": r.arm, **_axis_values(r), "seed": r.seed, **c} for r in results
            for c in (r.cases if checkpoint == "best" else r.last_cases)]  # fmt: skip
    atomic_write_text(path, _csv(header, rows))


def shown_axes(s: dict[str, Any]) -> list[str]:
    """The study's axes as table columns, without an axis called ``arm`` whose value is every arm's own name (it would
    repeat the first column)."""
    return [x for x in s["axes"] if x != "arm" or any(a["values"].get(x) != a["arm"] for a in s["arms"])]
