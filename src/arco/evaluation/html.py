"""``report.html`` of an evaluation: the summary, a sortable per-case table, the overlays and what was evaluated,
in one self-contained file (:class:`arco.report_html.Page`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from arco.report_html import Page, source_commit

__all__ = ["evaluation_page", "per_case_table", "config_text"]

_LABELS = {"dice": "Dice", "jaccard": "Jaccard", "hd95": "HD95", "asd": "ASD", "hd95_mm": "HD95 mm", "asd_mm": "ASD mm"}


def config_text(config: Any) -> str:
    """A configuration as YAML text (a dict), or ``str`` of anything else."""
    if isinstance(config, Mapping):
        import yaml

        return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None)
    return str(config)


def per_case_table(rows: list[dict[str, Any]], classes: list[str]) -> tuple[list[str], list[list[Any]]]:
    """One row per case: Dice of each class, the mean over foreground classes of Dice, HD95 and ASD, and the
    empty-mask cases (header, rows)."""
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(str(r["case"]), {})[str(r["class"])] = r
    header = ["case", *(f"Dice {c}" for c in classes), "mean Dice", "mean HD95", "mean ASD", "empty masks"]
    out = []
    for case, per in by_case.items():
        vals = [per[c] for c in classes if c in per]
        empty = ", ".join(f"{c}: {per[c]['empty']}" for c in classes if c in per and per[c].get("empty"))
        out.append(
            [
                case,
                *(float(per[c]["dice"]) if c in per else None for c in classes),
                float(np.mean([float(v["dice"]) for v in vals])),
                float(np.mean([float(v["hd95"]) for v in vals])),
                float(np.mean([float(v["asd"]) for v in vals])),
                empty or "-",
            ]
        )
    return header, out


def _summary_table(page: Page, summary: dict[str, Any]) -> None:
    metrics = summary["metrics"]
    header = ["class", *(f"{_LABELS[m]} (mean ± std)" for m in metrics)]
    rows = []
    for name, e in [*summary["per_class"].items(), ("mean", {"mean": summary["mean"], "std": summary["std"]})]:
        rows.append([name, *(f"{e['mean'][m]:.4f} ± {e['std'][m]:.4f}" for m in metrics)])
    page.table(header, rows)


def evaluation_page(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    overlays: Mapping[str, Path],
    meta: Mapping[str, Any] | None = None,
) -> Page:
    """The page of one evaluation.

    Args:
        rows, summary: :class:`~arco.evaluation.report.EvaluationResult`'s ``rows`` and ``summary``.
        overlays: role (``overlay_worst``, ...) -> written overlay PNG.
        meta: optional ``title``, ``config`` (a dict, shown as YAML) and ``source`` (key/value pairs: checkpoint,
            split, data root, ...).
    """
    meta = dict(meta or {})
    page = Page(str(meta.get("title") or "Evaluation"))
    classes = list(summary["per_class"])
    counts = ", ".join(f"{k} {v}" for k, v in summary["empty_counts"].items())
    page.meta(
        [
            *dict(meta.get("source") or {}).items(),
            ("cases", summary["num_cases"]),
            ("classes", ", ".join(classes)),
            (
                "metric conventions",
                f"compat={summary['compat']}; distances in voxels"
                + (" and mm" if "hd95_mm" in summary["metrics"] else ""),
            ),  # fmt: skip
            ("empty masks (case x class)", f"{counts}. Policy: {summary['empty_policy']}"),
            ("arco commit", source_commit()),
        ]
    )
    page.heading("Summary")
    page.paragraph("Mean ± standard deviation over cases; the last row is the mean over foreground classes.")
    _summary_table(page, summary)
    page.heading("Per case")
    page.paragraph("Click a column header to sort. The same numbers, one row per case and class: per_case.csv.")
    header, table = per_case_table(rows, classes)
    page.table(header, table, sortable=True, scroll=True)
    if overlays:
        page.heading("Overlays")
        page.paragraph(
            "The slice with the most ground-truth foreground of the worst, median and best case by mean Dice; each "
            "class in its own colour, ground truth solid, prediction dashed."
        )
        for role, path in overlays.items():
            page.figure(path, caption=f"{role.removeprefix('overlay_')}: {Path(path).name}")
    if meta.get("config") is not None:
        page.heading("Configuration")
        page.code(config_text(meta["config"]), summary="resolved configuration of the evaluated run")
    return page
