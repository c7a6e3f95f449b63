"""A study's tuning phase: every budget of the ``tune:`` section (:mod:`arco.study.budget`) trained at one seed and
one setting of the named axes, and each budget's setting chosen by the best validation Dice of its runs.

The tuning runs live in ``DIR/tune/<arm>/<setting>/seed<k>/``; their stages are trained in ``DIR/shared/`` like
every shared stage, so a main run that equals one of them (the chosen setting at the tuning seed) links to it and
is not trained again. A tuning run is never scored on the test split: the choice reads the best validation Dice of
its last stage (``summary.json``'s ``best_val_dice``, the mean foreground Dice of the selected checkpoint) and
nothing else. The chosen setting is frozen for every seed and every value of the other axes of the arms that take
it; a budget with a run that did not finish chooses nothing, and the arms that depend on it are not run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arco._checks import ConfigError
from arco.config import SECTIONS, read_yaml
from arco.study.budget import Setting
from arco.study.plan import stage_finished
from arco.study.spec import Arm, RunSpec, StudySpec, arm_runs

__all__ = ["TUNE", "RULE", "tuning_arms", "tuning_runs", "choose", "assign", "tuning_summary"]

TUNE = "tune"
RULE = (
    "Each method's budget was trained at one seed and one setting of the other axes, and the setting with the best "
    "validation Dice (mean over foreground classes, at the checkpoint chosen on validation) was frozen for every "
    "seed and setting of the other axes; the test split was not read."
)


def _arm_by_values(spec: StudySpec) -> dict[tuple, Arm]:
    return {tuple(sorted(a.values.items())): a for a in spec.arms()}


def tuning_arms(spec: StudySpec) -> dict[str, tuple[Arm, str]]:
    """Arm name -> (the arm whose tuning runs choose its setting, the budget's grid key); untuned arms are absent."""
    tune = spec.tune
    if tune is None:
        return {}
    by_values = _arm_by_values(spec)
    out = {}
    for arm in spec.arms():
        target = tune.target(arm.name, arm.values)
        if target is not None:
            key = tune.source(arm.name, arm.values)[0]  # type: ignore[index]
            out[arm.name] = (by_values[tuple(sorted(target.items()))], key)
    return out


def _folder(out: Path, arm: Arm, setting: Setting, seed: int) -> Path:
    return out / TUNE / arm.name / setting.name / f"seed{seed}"


def _check_fit(run: RunSpec, setting: Setting, key: str) -> None:
    stages = [s.name for s in run.config.stages]
    for o in setting.overrides:
        head = o.split("=", 1)[0].split(".")[0].strip()
        if head not in SECTIONS and head not in stages:
            raise ConfigError(
                f"tune.grid.{key}: {o.split('=', 1)[0]} sets stage {head!r}, which the runs of arm "
                f"{run.arm.name} do not have (stages: {', '.join(stages)})"
            )


def tuning_runs(spec: StudySpec, out: str | Path, fast: bool = False) -> list[RunSpec]:
    """Every tuning run: each tuned arm (once, however many arms take its choice) x its budget's settings, at the
    tuning seed, in ``DIR/tune/<arm>/<setting>/seed<k>``. Their arm names are ``tune/<arm>/<setting>``."""
    if spec.tune is None:
        return []
    out = Path(out).resolve()
    base = read_yaml(spec.base)
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for arm, key in tuning_arms(spec).values():
        if arm.name in seen:
            continue
        seen.add(arm.name)
        for setting in spec.tune.grid[key]:
            (run,) = arm_runs(spec, arm, out, [spec.tune.seed], lambda seed, a=arm, s=setting: _folder(out, a, s, seed),
                              setting.overrides, fast, base)  # fmt: skip
            _check_fit(run, setting, key)
            runs.append(
                dataclasses.replace(run, arm=dataclasses.replace(arm, name=f"{TUNE}/{arm.name}/{setting.name}"))
            )
    return runs


def _val(run: RunSpec) -> tuple[bool, float | None, int | None]:
    """(every stage finished, best validation Dice of the last stage, its best iteration)."""
    stages = [run.folder / s.name for s in run.config.stages]
    if not all(stage_finished(f) for f in stages):
        return False, None, None
    summary = json.loads((stages[-1] / "summary.json").read_text())
    val = summary.get("best_val_dice")
    ok = val is not None and math.isfinite(float(val))
    return True, float(val) if ok else None, summary.get("best_iteration")


def choose(spec: StudySpec, runs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """Per tuned arm: every setting's validation Dice and the chosen setting (the best validation Dice; the first
    in grid order on a tie), or ``chosen: None`` with the reason when a setting's run did not finish."""
    if spec.tune is None:
        return []
    by_arm: dict[str, list[RunSpec]] = {}
    for r in runs:
        by_arm.setdefault(r.arm.name.split("/")[1], []).append(r)
    keys = {arm.name: key for arm, key in tuning_arms(spec).values()}
    out = []
    for name, key in keys.items():
        candidates = []
        for setting, run in zip(spec.tune.grid[key], by_arm.get(name, [])):
            finished, val, best_it = _val(run)
            candidates.append({"setting": setting.name, "values": setting.values, "finished": finished,
                               "val_dice": val, "best_iteration": best_it, "folder": str(run.folder)})  # fmt: skip
        missing = [c["setting"] for c in candidates if not c["finished"]]
        no_val = [c["setting"] for c in candidates if c["finished"] and c["val_dice"] is None]
        entry: dict[str, Any] = {"arm": name, "budget": key, "candidates": candidates, "chosen": None}
        if not candidates:
            entry["reason"] = f"no tuning runs of {name}"
        elif missing:
            entry["reason"] = f"tuning run(s) {', '.join(missing)} of {name} did not finish (see DIR/logs/)"
        elif no_val:
            entry["reason"] = f"tuning run(s) {', '.join(no_val)} of {name} have no validation Dice (no val split?)"
        else:
            best = max(candidates, key=lambda c: c["val_dice"])  # max keeps the first of equal values
            entry.update(chosen=best["setting"], values=best["values"], val_dice=best["val_dice"])
        out.append(entry)
    return out


def assign(spec: StudySpec, choices: Sequence[dict[str, Any]]) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """(arm name -> overrides of its budget's chosen setting, arm name -> why it has none) for every tuned arm."""
    if spec.tune is None:
        return {}, {}
    by_arm = {c["arm"]: c for c in choices}
    tuned, skipped = {}, {}
    for name, (arm, key) in tuning_arms(spec).items():
        entry = by_arm.get(arm.name)
        if entry is None or entry["chosen"] is None:
            skipped[name] = entry["reason"] if entry else f"no tuning runs of {arm.name}"
            continue
        setting = next(s for s in spec.tune.grid[key] if s.name == entry["chosen"])
        tuned[name] = setting.overrides
    return tuned, skipped


def tuning_summary(spec: StudySpec, choices: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """What ``study.json`` says about tuning: the rule, the budgets, every setting's validation Dice, the choices and
    the arms that take each choice."""
    tune = spec.tune
    if tune is None:
        return None
    takers: dict[str, list[str]] = {}
    for name, (arm, _) in tuning_arms(spec).items():
        takers.setdefault(arm.name, []).append(name)
    untuned = [a.name for a in spec.arms() if a.name not in {n for v in takers.values() for n in v}]
    return {
        "rule": RULE,
        "seed": tune.seed,
        "where": tune.where,
        "settings_per_budget": tune.size,
        "budgets": {
            k: {p: sorted({s.values[p] for s in v}, key=[s.values[p] for s in v].index) for p in v[0].values}
            for k, v in tune.grid.items()
        },  # fmt: skip
        "share": {k: list(v) for k, v in tune.share.items()},
        "choices": [{**c, "applies_to": takers.get(c["arm"], [])} for c in choices],
        "untuned": untuned,
    }
