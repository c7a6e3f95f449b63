"""A study's summary: mean ± std over seeds per arm and class, paired differences to the reference arm,
selection by validation, written as ``study.json``, ``study.md`` and ``study.html``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text
from arco.study.collect import RunResult
from arco.study.spec import StudySpec
from arco.study.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, mean_std, paired_difference

__all__ = ["summarise", "write_report", "SELECTION_NOTE"]

SELECTION_NOTE = (
    "Checkpoints were selected on the validation split only: every run is scored with the checkpoint of its last "
    "stage that had the best validation Dice (best.pt); the test split was used for nothing but the numbers below."
)


def _ms(values: list[float]) -> dict[str, float]:
    m, s, n = mean_std(values)
    return {"mean": m, "std": s, "n": n}


def _arm_summary(arm: Any, rows: list[RunResult]) -> dict[str, Any]:
    classes = list(rows[0].per_class) if rows else []
    out: dict[str, Any] = {"arm": arm.name, "values": arm.values, "n_runs": len(rows), "seeds": [r.seed for r in rows]}
    out["classes"] = {c: {m: _ms([r.per_class[c][m] for r in rows]) for m in ("dice", "hd95", "asd")} for c in classes}
    out["mean"] = {m: _ms([r.mean[m] for r in rows]) for m in ("dice", "jaccard", "hd95", "asd")}
    out["val_dice"] = _ms([r.val_dice for r in rows if r.val_dice is not None])
    out["train_seconds"] = _ms([r.train_seconds for r in rows])
    out["iterations"] = rows[0].iterations if rows else None
    return out


def _compare(spec: StudySpec, by_arm: dict[str, list[RunResult]]) -> list[dict[str, Any]]:
    out = []
    for arm in spec.arms():
        ref = spec.reference(arm)
        if ref is None:
            continue
        a = {r.seed: r.case_dice() for r in by_arm.get(arm.name, [])}
        b = {r.seed: r.case_dice() for r in by_arm.get(ref, [])}
        pairs = [(a[s][c], b[s][c]) for s in sorted(set(a) & set(b)) for c in sorted(set(a[s]) & set(b[s]))]
        d = paired_difference([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else {"n": 0}
        seeds = sorted(set(a) & set(b))
        out.append(
            {"arm": arm.name, "reference": ref, "n_pairs": d.pop("n"), "seeds": seeds, "n_runs": 2 * len(seeds), **d}
        )
    return out


def _select(spec: StudySpec, arms: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each combination of the other axes: the value of the ``select_by_val`` axes with the best mean
    validation Dice over seeds (test numbers are not looked at)."""
    if not spec.select_by_val:
        return []
    groups: dict[tuple, list[Any]] = {}
    for arm in spec.arms():
        key = tuple((a, v) for a, v in arm.values.items() if a not in spec.select_by_val)
        groups.setdefault(key, []).append(arm)
    out = []
    for key, members in groups.items():
        scored = [(arms[m.name]["val_dice"]["mean"], m) for m in members if arms.get(m.name, {}).get("n_runs")]
        scored = [(v, m) for v, m in scored if not math.isnan(v)]
        if not scored:
            continue
        val, best = max(scored, key=lambda t: t[0])
        out.append(
            {
                "fixed": dict(key),
                "selected": {a: best.values[a] for a in spec.select_by_val},
                "arm": best.name,
                "val_dice": val,
                "test_dice": arms[best.name]["mean"]["dice"],
                "candidates": {m.name: arms[m.name]["val_dice"]["mean"] for _, m in scored},
            }
        )
    return out


def summarise(
    spec: StudySpec, results: list[RunResult], planned: int, failed: list[dict[str, str]], fast: bool
) -> dict[str, Any]:
    """Everything ``study.json`` holds."""
    by_arm: dict[str, list[RunResult]] = {}
    for r in results:
        by_arm.setdefault(r.arm, []).append(r)
    arms = {a.name: _arm_summary(a, sorted(by_arm.get(a.name, []), key=lambda r: r.seed)) for a in spec.arms()}
    return {
        "study": spec.name,
        "description": spec.description,
        "source": spec.source,
        "overrides": list(spec.overrides),
        "base": spec.base,
        "seeds": list(spec.seeds),
        "axes": {a: list(v) for a, v in spec.axes.items()},
        "compare_to": spec.compare_to,
        "fast": fast,
        "runs": {"planned": planned, "finished": len(results), "failed": failed},
        "selection_note": SELECTION_NOTE,
        "statistics": {
            "std": "sample standard deviation over seeds (ddof=1) of each run's mean over test cases",
            "difference": "mean over (seed, test case) pairs of the per-case mean foreground Dice, arm - reference",
            "ci": f"95 % bootstrap (scipy.stats.bootstrap, paired, BCa, {BOOTSTRAP_RESAMPLES} resamples, "
            f"random_state={BOOTSTRAP_SEED})",
            "p": "two-sided Wilcoxon signed-rank test over the same pairs (scipy.stats.wilcoxon)",
        },
        "arms": list(arms.values()),
        "comparisons": _compare(spec, by_arm),
        "selection": _select(spec, arms),
    }


def _f(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pm(e: dict[str, float], digits: int = 4) -> str:
    if not e.get("n"):
        return "n/a"
    return f"{_f(e['mean'], digits)} ± {_f(e['std'], digits)}" if e["n"] > 1 else _f(e["mean"], digits)


def _tables(s: dict[str, Any]) -> list[str]:
    axes = list(s["axes"])
    arms = [a for a in s["arms"] if a["n_runs"]]
    classes = list(dict.fromkeys(c for a in arms for c in a["classes"]))  # datasets may name different classes
    head = ["arm", *axes, "runs", *(f"Dice {c}" for c in classes), "Dice mean", "HD95", "ASD", "val Dice"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in s["arms"]:
        cells = [a["arm"], *(a["values"].get(x, "") for x in axes), str(a["n_runs"])]
        cells += [_pm(a["classes"][c]["dice"]) if c in a.get("classes", {}) else "n/a" for c in classes]
        cells += [_pm(a["mean"]["dice"]), _pm(a["mean"]["hd95"], 2), _pm(a["mean"]["asd"], 2), _pm(a["val_dice"])]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["## Test metrics (mean ± std over seeds)", "", *lines, ""]
    if s["comparisons"]:
        out += [
            f"## Paired differences to the reference ({', '.join(f'{k} = {v}' for k, v in s['compare_to'].items())})",
            "",
            "| arm | reference | Δ mean Dice | 95 % CI | Wilcoxon p | pairs (seed × case) | runs |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in s["comparisons"]:
            ci = f"[{_f(c.get('ci_low'))}, {_f(c.get('ci_high'))}]"
            out.append(
                f"| {c['arm']} | {c['reference']} | {_f(c.get('mean'), 4)} | {ci} | {_f(c.get('p_wilcoxon'), 3)} | "
                f"{c['n_pairs']} | {c['n_runs']} |"
            )
        out.append("")
    return out


def _markdown(s: dict[str, Any], figures: list[str]) -> str:
    runs = s["runs"]
    out = [f"# Study {s['study']}", ""]
    if s["description"]:
        out += [s["description"], ""]
    out += [
        f"Base configuration `{s['base']}`, seeds {s['seeds']}, {runs['planned']} runs planned, {runs['finished']} "
        f"finished and evaluated, {len(runs['failed'])} failed."
        + (
            " **Fast smoke run (--fast): every schedule divided by 10; the numbers do not measure the methods.**"
            if s["fast"]
            else ""
        ),
        "",
        s["selection_note"],
        "",
        *_tables(s),
        "Statistics: " + "; ".join(f"{k}: {v}" for k, v in s["statistics"].items()) + ". The pairs are treated as "
        "independent (cases of one seed share a network); 'runs' is the number of runs behind each number.",
        "",
    ]
    if s["selection"]:
        axes = ", ".join(f"`{a}`" for a in s["selection"][0]["selected"])
        out += [
            "## Chosen by validation",
            "",
            f"Values of {axes} picked per setting of the other axes by the best mean validation Dice over seeds; the "
            "test numbers were not consulted.",
            "",
            "| fixed | selected | arm | val Dice | test Dice |",
            "|---|---|---|---|---|",
        ]
        for e in s["selection"]:
            fixed = ", ".join(f"{k}={v}" for k, v in e["fixed"].items()) or "-"
            sel = ", ".join(f"{k}={v}" for k, v in e["selected"].items())
            out.append(f"| {fixed} | {sel} | {e['arm']} | {_f(e['val_dice'])} | {_pm(e['test_dice'])} |")
        out.append("")
    if runs["failed"]:
        out += ["## Failed runs", ""] + [f"- `{f['run']}`: {f['reason']} (log: `{f['log']}`)" for f in runs["failed"]]
        out.append("")
    out += ["Per-seed numbers: [results.csv](results.csv) (one row per run and class), [per_case.csv](per_case.csv) "
            "(every test case of every run); each run folder is `runs/<arm>/seed<k>/`.", ""]  # fmt: skip
    if s.get("qualitative"):
        out += [f"Qualitative panels ({s['qualitative']['rule']}):", ""]
    out += [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(out) + "\n"


def _plain(x: Any) -> Any:
    """NaN -> None (strict JSON), recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def write_report(
    summary: dict[str, Any],
    out: Path,
    figures: list[str],
    results: Sequence[RunResult] = (),
    panels: Sequence[dict[str, Any]] = (),
) -> None:
    """``study.json``, ``study.md`` and ``study.html`` in ``out``.

    Args:
        summary: :func:`summarise`'s result (plus ``wall_seconds``).
        out: the study folder.
        figures: the figures' file names in ``out``.
        results: the finished runs (the HTML page's per-run and per-case tables).
        panels: the qualitative panels (:func:`arco.study.qualitative.write_qualitative`).
    """
    from arco.study.html import study_page
    from arco.study.qualitative import RULE

    figures = [*figures, *(p["file"] for p in panels)]
    summary = {**summary, "figures": figures}
    if panels:
        summary["qualitative"] = {"rule": RULE, "panels": list(panels)}
    atomic_write_text(out / "study.json", json.dumps(_plain(summary), indent=2, default=str) + "\n")
    atomic_write_text(out / "study.md", _markdown(summary, figures))
    study_page(summary, out, figures, results, panels, RULE).write(out / "study.html")
