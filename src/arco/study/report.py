"""A study's summary: mean ± std over seeds per arm and class (of the selected and of the last checkpoint), paired
differences to each reference arm, where validation Dice peaked, selection and tuning by validation, written as
``study.json``, ``study.md`` and ``study.html``. The markdown sections are also the tables of the results page
(:mod:`arco.study.results`)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text
from arco.study.collect import RunResult, axis_column, shown_axes
from arco.study.spec import StudySpec
from arco.study.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, mean_std, paired_difference

__all__ = ["summarise", "write_report", "markdown_sections", "SELECTION_NOTE", "LATE_PEAK"]

SELECTION_NOTE = (
    "Checkpoints were selected on the validation split only: every run is scored with the checkpoint of its last "
    "stage that had the best validation Dice (best.pt); the test split was used for nothing but the numbers below. "
    "'last ckpt' columns score the same runs' last checkpoint (last.pt of the last stage) instead."
)
#: An arm whose median peak of validation Dice lies in this last fraction of its schedule is flagged.
LATE_PEAK = 0.1


def _ms(values: list[float]) -> dict[str, float]:
    m, s, n = mean_std(values)
    return {"mean": m, "std": s, "n": n}


def _arm_summary(arm: Any, rows: list[RunResult]) -> dict[str, Any]:
    classes = list(rows[0].per_class) if rows else []
    out: dict[str, Any] = {"arm": arm.name, "values": arm.values, "n_runs": len(rows), "seeds": [r.seed for r in rows]}
    out["classes"] = {c: {m: _ms([r.per_class[c][m] for r in rows]) for m in ("dice", "hd95", "asd")} for c in classes}
    out["mean"] = {m: _ms([r.mean[m] for r in rows]) for m in ("dice", "jaccard", "hd95", "asd")}
    out["val_dice"] = _ms([r.val_dice for r in rows if r.val_dice is not None])
    out["last"] = {m: _ms([r.last_mean.get(m) for r in rows if r.last_mean]) for m in ("dice", "hd95", "asd")}
    out["train_seconds"] = _ms([r.train_seconds for r in rows])
    out["iterations"] = rows[0].iterations if rows else None
    return out


def _compare(spec: StudySpec, by_arm: dict[str, list[RunResult]], checkpoint: str = "best") -> list[dict[str, Any]]:
    """Paired differences of every arm to its counterpart under each reference of ``compare_to``."""
    out = []
    refs = spec.references or ((spec.compare_to,) if spec.compare_to else ())
    for ref_values in refs:
        label = ", ".join(f"{k} = {v}" for k, v in ref_values.items())
        for arm in spec.arms():
            ref = spec.reference(arm, ref_values)
            if ref is None:
                continue
            a = {r.seed: r.case_dice(checkpoint) for r in by_arm.get(arm.name, [])}
            b = {r.seed: r.case_dice(checkpoint) for r in by_arm.get(ref, [])}
            pairs = [(a[s][c], b[s][c]) for s in sorted(set(a) & set(b)) for c in sorted(set(a[s]) & set(b[s]))]
            d = paired_difference([p[0] for p in pairs], [p[1] for p in pairs]) if pairs else {"n": 0}
            seeds = sorted(set(a) & set(b))
            out.append({"arm": arm.name, "reference": ref, "compare_to": label, "n_pairs": d.pop("n"), "seeds": seeds,
                        "n_runs": 2 * len(seeds), **d})  # fmt: skip
    return out


def _convergence(spec: StudySpec, by_arm: dict[str, list[RunResult]]) -> list[dict[str, Any]]:
    """Per arm: where the selected checkpoint lies (iteration counted from the start of the run, and as a fraction of
    the run's iterations), median / min / max over seeds, and whether the median is in the last :data:`LATE_PEAK`."""
    out = []
    for arm in spec.arms():
        rows = [r for r in by_arm.get(arm.name, []) if r.best_iteration is not None]
        if not rows:
            continue
        its = [r.best_iteration for r in rows]
        frac = [r.best_fraction for r in rows]
        median = float(statistics.median(frac))
        out.append({
            "arm": arm.name,
            "iterations": rows[0].iterations,
            "best_iteration": {"median": float(statistics.median(its)), "min": min(its), "max": max(its)},
            "fraction": {"median": median, "min": min(frac), "max": max(frac)},
            "n_runs": len(rows),
            "late": median > 1 - LATE_PEAK,
        })  # fmt: skip
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
        "references": [dict(r) for r in spec.references],
        "comparisons": _compare(spec, by_arm),
        "comparisons_last": _compare(spec, by_arm, "last"),
        "convergence": _convergence(spec, by_arm),
        "selection": _select(spec, arms),
    }


def _f(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pm(e: dict[str, float], digits: int = 4) -> str:
    if not e.get("n"):
        return "n/a"
    return f"{_f(e['mean'], digits)} ± {_f(e['std'], digits)}" if e["n"] > 1 else _f(e["mean"], digits)


def _h(level: int, text: str) -> str:
    return "#" * level + " " + text


def _metrics_md(s: dict[str, Any], level: int = 2) -> list[str]:
    axes = shown_axes(s)
    arms = [a for a in s["arms"] if a["n_runs"]]
    classes = list(dict.fromkeys(c for a in arms for c in a["classes"]))  # datasets may name different classes
    head = ["arm", *map(axis_column, axes), "runs", *(f"Dice {c}" for c in classes), "Dice mean",
            "Dice mean (last ckpt)", "HD95", "ASD", "val Dice"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in s["arms"]:
        cells = [a["arm"], *(a["values"].get(x, "") for x in axes), str(a["n_runs"])]
        cells += [_pm(a["classes"][c]["dice"]) if c in a.get("classes", {}) else "n/a" for c in classes]
        last = a.get("last", {}).get("dice", {})
        cells += [_pm(a["mean"]["dice"]), _pm(last), _pm(a["mean"]["hd95"], 2), _pm(a["mean"]["asd"], 2)]
        cells.append(_pm(a["val_dice"]))
        lines.append("| " + " | ".join(cells) + " |")
    return [_h(level, "Test metrics (mean ± std over seeds)"), "", *lines, ""]


def _differences_md(s: dict[str, Any], level: int = 2) -> list[str]:
    out: list[str] = []
    for key, what in (("comparisons", "selected checkpoint"), ("comparisons_last", "last checkpoint")):
        rows = s.get(key) or []
        for label in dict.fromkeys(c.get("compare_to", "") for c in rows):
            out += [
                _h(level, f"Paired differences to the reference ({label}), {what}"),
                "",
                "| arm | reference | Δ mean Dice | 95 % CI | Wilcoxon p | pairs (seed × case) | runs |",
                "|---|---|---|---|---|---|---|",
            ]
            for c in rows:
                if c.get("compare_to", "") != label:
                    continue
                ci = f"[{_f(c.get('ci_low'))}, {_f(c.get('ci_high'))}]"
                out.append(
                    f"| {c['arm']} | {c['reference']} | {_f(c.get('mean'), 4)} | {ci} | {_f(c.get('p_wilcoxon'), 3)} "
                    f"| {c['n_pairs']} | {c['n_runs']} |"
                )
            out.append("")
    return out


def _tables(s: dict[str, Any], level: int = 2) -> list[str]:
    return [*_metrics_md(s, level), *_differences_md(s, level)]


def _convergence_md(s: dict[str, Any], level: int = 2) -> list[str]:
    rows = s.get("convergence") or []
    if not rows:
        return []
    out = [
        _h(level, "Where validation Dice peaked"),
        "",
        "The iteration of each run's selected checkpoint, counted from the start of the run (all its stages), and as "
        f"a fraction of the run's iterations; median [min, max] over seeds. Arms whose median is in the last "
        f"{LATE_PEAK:.0%} of the schedule are marked: they may need a longer schedule.",
        "",
        "| arm | iterations | peak iteration, median [min, max] | fraction of the schedule, median [min, max] | |",
        "|---|---|---|---|---|",
    ]
    for c in rows:
        it, fr = c["best_iteration"], c["fraction"]
        flag = "**may need a longer schedule**" if c["late"] else ""
        out.append(f"| {c['arm']} | {c['iterations']} | {it['median']:.0f} [{it['min']}, {it['max']}] | "
                   f"{fr['median']:.2f} [{fr['min']:.2f}, {fr['max']:.2f}] | {flag} |")  # fmt: skip
    return [*out, ""]


def _tuning_md(s: dict[str, Any], level: int = 2) -> list[str]:
    t = s.get("tuning")
    if not t:
        return []
    where = ", ".join(f"{k} = {v}" for k, v in t["where"].items()) or "every setting of the other axes"
    out = [_h(level, "Tuning on validation"), "", t["rule"], "",
           f"Seed {t['seed']}, at {where}; {t['settings_per_budget']} settings per method.", "",
           "| tuned arm | budget | chosen | val Dice of the choice | used by |", "|---|---|---|---|---|"]  # fmt: skip
    for c in t["choices"]:
        chosen = (
            ", ".join(f"{k}={v}" for k, v in c.get("values", {}).items())
            if c["chosen"]
            else "none: " + c.get("reason", "")
        )
        used = ", ".join(c.get("applies_to", [])) or "-"
        out.append(f"| {c['arm']} | {c['budget']} | {chosen} | {_f(c.get('val_dice'))} | {used} |")
    if t.get("untuned"):
        out += ["", "Not tuned (the study's settings): " + ", ".join(t["untuned"]) + "."]
    out += ["", "Every setting's best validation Dice (the chosen one in bold):", "",
            "| tuned arm | setting | val Dice | peak iteration (last stage) |", "|---|---|---|---|"]  # fmt: skip
    for c in t["choices"]:
        for cand in c["candidates"]:
            val = _f(cand.get("val_dice")) if cand.get("finished") else "not finished"
            if cand["setting"] == c.get("chosen"):
                val = f"**{val}**"
            values = ", ".join(f"{k}={v}" for k, v in cand["values"].items())
            out.append(
                f"| {c['arm']} | {values} | {val} | {cand.get('best_iteration') if cand.get('finished') else ''} |"
            )
    return [*out, ""]


def _selection_md(s: dict[str, Any], level: int = 2) -> list[str]:
    if not s["selection"]:
        return []
    axes = ", ".join(f"`{a}`" for a in s["selection"][0]["selected"])
    out = [
        _h(level, "Chosen by validation"),
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
    return [*out, ""]


def statistics_note(s: dict[str, Any]) -> str:
    """One paragraph: how the numbers were computed."""
    stats = "; ".join(f"{k}: {v}" for k, v in s["statistics"].items())
    return (
        f"Statistics: {stats}. The pairs are treated as independent (cases of one seed share a network); 'runs' is "
        "the number of runs behind each number."
    )


def provenance_line(s: dict[str, Any]) -> str:
    """Commit, machine and wall time of a study (what ``arco study`` recorded when it ran)."""
    m = s.get("machine") or {}
    cores = m.get("usable_cores", m.get("cores", "?"))
    host = f"{m.get('cpu', 'unknown CPU')}, {cores} cores, torch {m.get('torch', '?')}"
    if m.get("gpu"):
        host += f", GPU {m['gpu']}"
    total = s.get("wall_total_seconds", s.get("wall_seconds"))
    parts = [f"commit `{s.get('commit', 'unknown')}`", host]
    if total is not None:
        n = len(s.get("history") or []) or 1
        runs = f"{n} recorded invocation{'s' if n > 1 else ''}"
        parts.append(f"wall time {_duration(total)} ({runs}, `--jobs {s.get('jobs', '?')}`)")
    if s.get("train_seconds"):
        parts.append(f"training time recorded by its {s.get('train_stages', '?')} stages, summed: "
                     f"{_duration(s['train_seconds'])}")  # fmt: skip
    return "; ".join(parts) + "."


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ({seconds:.0f} s)"
    return f"{seconds / 3600:.1f} h ({seconds:.0f} s)"


def markdown_sections(s: dict[str, Any], level: int = 2) -> list[str]:
    """The tables of a study as ``study.md`` prints them, headings at ``level``: test metrics, paired differences,
    tuning, where validation Dice peaked, selection by validation."""
    return [*_tables(s, level), statistics_note(s), "", *_tuning_md(s, level), *_convergence_md(s, level),
            *_selection_md(s, level)]  # fmt: skip


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
        provenance_line(s),
        "",
        s["selection_note"],
        "",
        *markdown_sections(s),
    ]
    if runs["failed"]:
        out += ["## Failed runs", ""] + [f"- `{f['run']}`: {f['reason']} (log: `{f['log']}`)" for f in runs["failed"]]
        out.append("")
    out += ["Per-seed numbers: [results.csv](results.csv) (one row per run and class), [per_case.csv](per_case.csv) "
            "(every test case of every run; [per_case_last.csv](per_case_last.csv) for the last checkpoints); each "
            "run folder is `runs/<arm>/seed<k>/`.", ""]  # fmt: skip
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
