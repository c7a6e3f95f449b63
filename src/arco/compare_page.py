"""The page of a comparison of runs (``arco evaluate --compare``, the demo's ``report.html``)."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from arco.evaluation.html import config_text
from arco.report_html import Page, source_commit

__all__ = ["comparison_page", "CASE_RULE", "safe_name"]

#: The qualitative panel's cases.
CASE_RULE = "the reference run's median case and its worst case by mean foreground Dice"


def safe_name(name: str) -> str:
    """A run's name as a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def comparison_page(
    compared: Sequence[Any],
    summary: Mapping[str, Any],
    figures: Mapping[str, Path],
    out: Path,
    title: str = "Comparison",
    intro: Callable[[Any], None] | None = None,
) -> Any:
    """The comparison's page: per-class Dice of every run, the differences to the reference, a sortable per-case
    table, the figures, each run's overlays and configuration.

    Args:
        compared: the runs (:class:`arco.compare.ComparedRun`), reference first, each evaluated.
        summary: ``comparison.json``'s content.
        figures: ``qualitative`` and ``curves`` -> PNG.
        out: the folder the page is written to (links to each run's own report are relative to it).
        title: the page's title.
        intro: adds sections at the top (the demo's headline table).
    """
    page = Page(title)
    ref = compared[0]
    page.meta(
        [
            ("runs", ", ".join(c.name for c in compared)),
            ("reference", ref.name),
            ("split", f"{summary['split']} ({len(ref.case_dice)} cases)"),
            ("arco commit", source_commit()),
        ]
    )
    if intro is not None:
        intro(page)
    _dice_tables(page, compared, summary)
    if "qualitative" in figures:
        page.heading("Qualitative comparison")
        page.paragraph(
            f"Rows: {CASE_RULE}, at the slice with the most ground-truth foreground. Columns: the image, the "
            "ground truth and each run's prediction; the Dice in a title is that run's mean foreground Dice over "
            "the whole case."
        )
        page.figure(figures["qualitative"], caption="qualitative.png")
    if "curves" in figures:
        page.heading("Training curves")
        page.paragraph("Every run on the same axes; a loss appears only for the runs that have it.")
        page.figure(figures["curves"], caption="curves.png")
    page.heading("Overlays of each run")
    for c in compared:
        page.heading(c.name, level=3)
        for role, path in c.result.files.items():
            if role.startswith("overlay_"):
                page.figure(path, caption=f"{c.name}, {role.removeprefix('overlay_')}: {path.name}",
                            alt=f"{c.name}/{path.name}")  # fmt: skip
        report = c.result.files.get("report_html")
        if report is not None:
            href = html.escape(os.path.relpath(report, out))
            page.raw(f'<p><a href="{href}">{html.escape(c.name)}: its evaluation report</a></p>')
    page.heading("Configuration")
    for c in compared:
        if c.config is not None:
            page.code(config_text(c.config), summary=f"{c.name}: {c.checkpoint}")
    return page


def _dice_tables(page: Page, compared: Sequence[Any], summary: Mapping[str, Any]) -> None:
    classes = list(compared[0].summary["per_class"])
    page.heading("Test Dice per class")
    header = ["run", *classes, "mean", "HD95", "ASD"]
    rows = []
    for c in compared:
        s = c.summary
        rows.append(
            [c.name, *(s["per_class"][k]["mean"]["dice"] for k in classes), s["mean"]["dice"],
             s["mean"]["hd95"], s["mean"]["asd"]]
        )  # fmt: skip
    page.table(header, rows)
    if summary["differences"]:
        page.heading("Differences to the reference")
        page.paragraph(
            "Mean over test cases of the difference in per-case mean foreground Dice (run - reference), 95 % "
            "bootstrap interval (paired, BCa, fixed seed) and two-sided Wilcoxon signed-rank p."
        )
        page.table(
            ["run", "reference", "Δ mean Dice", "95 % CI low", "95 % CI high", "Wilcoxon p", "cases"],
            [[d["run"], d["reference"], d["mean"], d["ci_low"], d["ci_high"], d["p_wilcoxon"], d["n"]]
             for d in summary["differences"]],
        )  # fmt: skip
    page.heading("Per case")
    page.paragraph("Mean foreground Dice of every run on every case; click a header to sort.")
    cases = sorted(compared[0].case_dice)
    page.table(
        ["case", *(c.name for c in compared)],
        [[k, *(c.case_dice.get(k) for c in compared)] for k in cases],
        sortable=True,
        scroll=True,
    )
