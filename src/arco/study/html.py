"""``study.html``: a study on one self-contained page (:class:`arco.report_html.Page`): what was run, where and how
long, the test metrics per arm and class (selected and last checkpoint), the paired differences and their
statistics, the tuning on validation, where validation Dice peaked, the selection by validation, sortable per-run
and per-case tables, every figure and qualitative panel embedded, the study file and each arm's resolved
configuration."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arco.report_html import Page, source_commit
from arco.study.collect import RunResult, shown_axes

__all__ = ["study_page", "FIGURE_CAPTIONS"]

FIGURE_CAPTIONS = {
    "dice_per_arm.png": "Test mean foreground Dice of every run (a point per seed; black square: mean ± std over "
    "seeds), the compared values as colours, a group per setting of the other axes.",
    "curves.png": "Validation Dice and L_contrast against iterations, mean and ± std band over seeds (the paper's "
    "Fig. 5); the compared values on the same axes, a column per group; a quantity is drawn only for arms that "
    "log it.",
    "dice_vs_labeled.png": "Test mean Dice against the number of labeled subjects (mean ± std over seeds).",
}


def _pm(e: dict[str, Any] | None, digits: int = 4) -> str:
    if not e or not e.get("n"):
        return "n/a"
    m, s = e.get("mean"), e.get("std")
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    if e["n"] > 1 and s is not None and not (isinstance(s, float) and math.isnan(s)):
        return f"{m:.{digits}f} ± {s:.{digits}f}"
    return f"{m:.{digits}f}"


def _overview(page: Page, s: dict[str, Any]) -> None:
    runs = s["runs"]
    page.meta(
        [
            ("study", s["study"]),
            ("description", s.get("description") or "-"),
            ("base configuration", s["base"]),
            ("seeds", ", ".join(str(x) for x in s["seeds"])),
            ("axes", "; ".join(f"{a}: {', '.join(v)}" for a, v in s["axes"].items()) or "-"),
            ("reference (compare_to)", "; ".join(", ".join(f"{k} = {v}" for k, v in r.items())
                                                   for r in s.get("references") or [s["compare_to"]]) or "-"),
            ("runs", f"{runs['planned']} planned, {runs['finished']} finished, {len(runs['failed'])} failed"),
            ("wall time", _wall(s)),
            ("arco commit", s.get("commit") or source_commit()),
            ("machine", _machine(s.get("machine"))),
        ]
    )  # fmt: skip
    if s.get("fast"):
        page.paragraph("Fast smoke run (--fast): every schedule divided by 10; the numbers do not measure the "
                       "methods.", note=True)  # fmt: skip
    page.paragraph(s["selection_note"])


def _wall(s: dict[str, Any]) -> str:
    if s.get("wall_seconds") is None:
        return "n/a"
    total, n = s.get("wall_total_seconds", s["wall_seconds"]), len(s.get("history") or []) or 1
    jobs, this = s.get("jobs", "?"), s["wall_seconds"]
    out = f"{total:.0f} s over {n} recorded invocation(s) with --jobs {jobs} (this one {this:.0f} s)"
    if s.get("train_seconds"):
        out += f"; the {s.get('train_stages', '?')} stages' recorded training time, summed: {s['train_seconds']:.0f} s"
    return out


def _machine(m: dict[str, Any] | None) -> str:
    if not m:
        return "n/a"
    out = f"{m.get('cpu')}, {m.get('usable_cores')} of {m.get('cores')} cores, torch {m.get('torch')}"
    out += f", Python {m.get('python')}, load average {m.get('load_average')} at the start"
    return out + (f", GPU {m['gpu']}" if m.get("gpu") else "")


def _metrics(page: Page, s: dict[str, Any]) -> None:
    axes = shown_axes(s)
    arms = [a for a in s["arms"] if a["n_runs"]]
    classes = list(dict.fromkeys(c for a in arms for c in a["classes"]))  # datasets may name different classes
    page.heading("Test metrics per arm")
    page.paragraph("Mean ± sample standard deviation over seeds of each run's mean over test cases.")
    header = ["arm", *axes, "runs", *(f"Dice {c}" for c in classes), "Dice mean", "Dice mean (last ckpt)", "HD95",
              "ASD", "val Dice"]  # fmt: skip
    rows = []
    for a in s["arms"]:
        cells = [a["arm"], *(a["values"].get(x, "") for x in axes), a["n_runs"]]
        cells += [_pm(a.get("classes", {}).get(c, {}).get("dice")) for c in classes]
        cells += [_pm(a["mean"]["dice"]), _pm(a.get("last", {}).get("dice")), _pm(a["mean"]["hd95"], 2),
                  _pm(a["mean"]["asd"], 2), _pm(a["val_dice"])]  # fmt: skip
        rows.append(cells)
    page.table(header, rows, sortable=True)
    for key, what in (("comparisons", "selected checkpoint"), ("comparisons_last", "last checkpoint")):
        rows = s.get(key) or []
        for label in dict.fromkeys(c.get("compare_to", "") for c in rows):
            page.heading(f"Paired differences to the reference ({label}), {what}")
            page.table(
                ["arm", "reference", "Δ mean Dice", "95 % CI low", "95 % CI high", "Wilcoxon p", "pairs", "runs"],
                [[c["arm"], c["reference"], c.get("mean"), c.get("ci_low"), c.get("ci_high"), c.get("p_wilcoxon"),
                  c["n_pairs"], c["n_runs"]] for c in rows if c.get("compare_to", "") == label],
                sortable=True,
            )  # fmt: skip
    page.heading("Statistics", level=3)
    page.raw("<ul>" + "".join(f"<li><b>{k}</b>: {_esc(v)}</li>" for k, v in s["statistics"].items()) + "</ul>")
    page.paragraph(
        "The pairs are treated as independent (cases of one seed share a network); 'runs' is the number of runs "
        "behind each number."
    )
    if s["selection"]:
        page.heading("Chosen by validation")
        page.table(
            ["fixed", "selected", "arm", "val Dice", "test Dice"],
            [
                [
                    ", ".join(f"{k}={v}" for k, v in e["fixed"].items()) or "-",
                    ", ".join(f"{k}={v}" for k, v in e["selected"].items()),
                    e["arm"],
                    e["val_dice"],
                    _pm(e["test_dice"]),
                ]
                for e in s["selection"]
            ],  # fmt: skip
        )
    _tuning(page, s)
    _convergence(page, s)
    if s["runs"]["failed"]:
        page.heading("Failed runs")
        page.table(["run", "reason", "log"], [[f["run"], f["reason"], f["log"]] for f in s["runs"]["failed"]])


def _tuning(page: Page, s: dict[str, Any]) -> None:
    t = s.get("tuning")
    if not t:
        return
    page.heading("Tuning on validation")
    where = ", ".join(f"{k} = {v}" for k, v in t["where"].items()) or "every setting of the other axes"
    page.paragraph(f"{t['rule']} Seed {t['seed']}, at {where}; {t['settings_per_budget']} settings per method.")
    page.table(
        ["tuned arm", "budget", "chosen", "val Dice of the choice", "used by"],
        [[c["arm"], c["budget"], ", ".join(f"{k}={v}" for k, v in c.get("values", {}).items()) if c["chosen"]
          else "none: " + c.get("reason", ""), c.get("val_dice"), ", ".join(c.get("applies_to", [])) or "-"]
         for c in t["choices"]],
    )  # fmt: skip
    if t.get("untuned"):
        page.paragraph("Not tuned (the study's settings): " + ", ".join(t["untuned"]) + ".")
    page.table(
        ["tuned arm", "setting", "val Dice", "chosen", "peak iteration (last stage)"],
        [[c["arm"], ", ".join(f"{k}={v}" for k, v in cand["values"].items()),
          cand.get("val_dice") if cand.get("finished") else "not finished",
          "yes" if cand["setting"] == c.get("chosen") else "", cand.get("best_iteration")]
         for c in t["choices"] for cand in c["candidates"]],
        sortable=True,
    )  # fmt: skip


def _convergence(page: Page, s: dict[str, Any]) -> None:
    rows = s.get("convergence") or []
    if not rows:
        return
    page.heading("Where validation Dice peaked")
    page.paragraph("The iteration of each run's selected checkpoint, counted from the start of the run, and as a "
                   "fraction of the run's iterations (median, min and max over seeds). Arms whose median is in the "
                   "last 10 % of the schedule may need a longer schedule.")  # fmt: skip
    page.table(
        ["arm", "iterations", "peak iteration (median)", "min", "max", "fraction (median)", "min", "max", "flag"],
        [[c["arm"], c["iterations"], c["best_iteration"]["median"], c["best_iteration"]["min"],
          c["best_iteration"]["max"], c["fraction"]["median"], c["fraction"]["min"], c["fraction"]["max"],
          "may need a longer schedule" if c["late"] else ""] for c in rows],
        sortable=True,
    )  # fmt: skip


def _esc(x: Any) -> str:
    import html

    return html.escape(str(x))


def _per_run(page: Page, results: Sequence[RunResult], axes: list[str]) -> None:
    if not results:
        return
    classes = list(dict.fromkeys(c for r in results for c in r.per_class))
    page.heading("Per run")
    page.paragraph("One row per run (results.csv has the same numbers); click a header to sort.")
    page.table(
        [
            "arm",
            *axes,
            "seed",
            *(f"Dice {c}" for c in classes),
            "Dice mean",
            "HD95",
            "ASD",
            "Dice mean (last ckpt)",
            "val Dice",
            "peak iteration",
            "iterations",
            "train s",
        ],
        [
            [
                r.arm,
                *(r.axes.get(a, "") for a in axes),
                r.seed,
                *(r.per_class.get(c, {}).get("dice") for c in classes),
                r.mean.get("dice"),
                r.mean.get("hd95"),
                r.mean.get("asd"),
                r.last_mean.get("dice"),
                r.val_dice,
                r.best_iteration,
                r.iterations,
                round(r.train_seconds, 1),
            ]
            for r in results
        ],  # fmt: skip
        sortable=True,
        scroll=True,
    )
    page.heading("Per case")
    page.paragraph("Every test case of every run: Dice per class and the mean over foreground classes "
                   "(per_case.csv); click a header to sort.")  # fmt: skip
    rows = []
    for r in results:
        by_case: dict[str, dict[str, float]] = {}
        for c in r.cases:
            by_case.setdefault(str(c["case"]), {})[str(c["class"])] = float(c["dice"])
        for case, per in by_case.items():
            rows.append([r.arm, r.seed, case, *(per.get(c) for c in classes), sum(per.values()) / len(per)])
    page.table(["arm", "seed", "case", *(f"Dice {c}" for c in classes), "mean Dice"], rows, sortable=True,
               scroll=True)  # fmt: skip


def _figures(page: Page, out: Path, figures: Sequence[str], panels: Sequence[dict[str, Any]], rule: str) -> None:
    plots = [f for f in figures if not f.startswith("qualitative")]
    if plots:
        page.heading("Figures")
        for f in plots:
            page.figure(out / f, caption=f"{f}: {FIGURE_CAPTIONS.get(f, '')}")
    if panels:
        page.heading("Qualitative comparison")
        page.paragraph(f"Cases: {rule}.")
        for p in panels:
            page.figure(out / p["file"], caption=f"{p['file']}: reference {p['reference']}, seed {p['seed']}, arms "
                        f"{', '.join(p['arms'])}")  # fmt: skip


def _configuration(page: Page, s: dict[str, Any], results: Sequence[RunResult]) -> None:
    page.heading("Configuration")
    src = Path(str(s.get("source") or ""))
    if src.is_file():
        page.code(src.read_text(), summary=f"study file {src}")
    if s.get("overrides"):
        page.code("\n".join(s["overrides"]), summary="overrides of every run (set: and --set)")
    seen = set()
    for r in results:
        if r.arm in seen:
            continue
        seen.add(r.arm)
        cfg = r.run.folder / r.run.config.stages[-1].name / "config.yaml"
        if cfg.is_file():
            page.code(cfg.read_text(), summary=f"{r.arm}: resolved configuration ({cfg.relative_to(r.run.folder)} "
                      f"of seed {r.seed})")  # fmt: skip


def study_page(
    summary: dict[str, Any],
    out: Path,
    figures: Sequence[str],
    results: Sequence[RunResult],
    panels: Sequence[dict[str, Any]] = (),
    rule: str = "",
) -> Page:
    """The study's page.

    Args:
        summary: ``study.json``'s content (:func:`arco.study.report.summarise` plus ``wall_seconds``).
        out: the study folder (figures are read from it).
        figures: PNG file names in ``out`` (plots and qualitative panels).
        results: the finished runs.
        panels: what each qualitative panel shows (:func:`arco.study.qualitative.write_qualitative`).
        rule: how the qualitative cases were chosen.
    """
    page = Page(f"Study {summary['study']}")
    _overview(page, summary)
    _metrics(page, summary)
    _figures(page, out, figures, panels, rule)
    order = {a["arm"]: i for i, a in enumerate(summary["arms"])}  # grid order, as in the tables above
    _per_run(page, sorted(results, key=lambda r: (order.get(r.arm, len(order)), r.seed)), list(summary["axes"]))
    _configuration(page, summary, results)
    return page
