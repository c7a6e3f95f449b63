"""The results page (``arco study report DIR ... --out docs/results.md``) and the README's headline block, generated
from finished study folders so that no number is copied by hand.

For every study folder (its ``study.json``): the description, the command that ran it, the commit, the machine and
the wall time ``arco study`` recorded, a short reading of the paired differences generated from the numbers, the
tables as ``study.md`` prints them (:func:`arco.study.report.markdown_sections`: test metrics of the selected and
the last checkpoint, paired differences to each reference, the tuning choices and every tuned setting's validation
Dice, where validation Dice peaked), and its figures, copied next to the page (``figures/results/<study>-<file>``).

The README block between ``<!-- results:headline:start -->`` and ``<!-- results:headline:end -->`` is rewritten
from one study (:func:`write_headline`): mean ± std test Dice per compared value and group, and the paired
difference to the first reference with its interval; the text outside the markers is left as it is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arco._checks import ConfigError
from arco._io import atomic_write_text
from arco.study.provenance import training_seconds
from arco.study.report import markdown_sections, provenance_line
from arco.study.variance import load_variance, variance_md

__all__ = ["load_summary", "reading", "results_page", "write_headline", "HEADLINE_START", "HEADLINE_END"]

HEADLINE_START = "<!-- results:headline:start -->"
HEADLINE_END = "<!-- results:headline:end -->"


def load_summary(folder: str | os.PathLike) -> dict[str, Any]:
    """A finished study folder's ``study.json`` (with ``folder`` added).

    Raises:
        ConfigError: the folder holds no readable ``study.json``.
    """
    path = Path(folder) / "study.json"
    if not path.is_file():
        raise ConfigError(f"{folder} holds no study.json: give folders written by `arco study NAME --out DIR`")
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; rerun `arco study ... --resume` to rewrite it") from exc
    if "train_seconds" not in summary:  # written before study.json recorded it
        summary["train_seconds"], summary["train_stages"] = training_seconds(Path(folder))
    return {**summary, "folder": str(Path(folder).resolve())}


def _d(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def _diff(c: dict[str, Any]) -> str:
    return f"{c['arm']} ({_d(c.get('mean'))} [{_d(c.get('ci_low'))}, {_d(c.get('ci_high'))}])"


def _verdicts(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"ahead": [], "behind": [], "within": [], "too few": []}
    for c in rows:
        low, high = c.get("ci_low"), c.get("ci_high")
        if low is None or high is None or c.get("n_pairs", 0) < 2:
            out["too few"].append(c)
        elif low > 0:
            out["ahead"].append(c)
        elif high < 0:
            out["behind"].append(c)
        else:
            out["within"].append(c)
    return out


def reading(s: dict[str, Any]) -> list[str]:
    """Bullets that say what the numbers say: per reference, the arms whose paired 95 % interval lies above zero,
    below zero, or includes it; the arms flagged by the convergence check; the largest gap between the selected and
    the last checkpoint; failed runs; a fast run. No judgement beyond the intervals."""
    out = []
    if s.get("fast"):
        out.append("Fast smoke run (--fast): every schedule divided by 10; these numbers do not measure the methods.")
    rows = s.get("comparisons") or []
    for label in dict.fromkeys(c.get("compare_to", "") for c in rows):
        v = _verdicts([c for c in rows if c.get("compare_to", "") == label])
        parts = [
            f"above the reference beyond the interval: {', '.join(map(_diff, v['ahead'])) or 'none'}",
            f"below it beyond the interval: {', '.join(map(_diff, v['behind'])) or 'none'}",
            f"interval includes 0: {', '.join(map(_diff, v['within'])) or 'none'}",
        ]
        if v["too few"]:
            parts.append(f"fewer than two pairs: {', '.join(c['arm'] for c in v['too few'])}")
        out.append(f"Against {label} (Δ mean test Dice of the selected checkpoints, paired 95 % interval over seed × "
                   f"test case): " + "; ".join(parts) + ".")  # fmt: skip
    late = [c["arm"] for c in s.get("convergence") or [] if c.get("late")]
    if s.get("convergence"):
        out.append(
            "Median peak of validation Dice in the last 10 % of the schedule (may need a longer schedule): "
            + (", ".join(late) if late else "no arm")
            + "."
        )
    gaps = [(a["arm"], a["last"]["dice"]["mean"] - a["mean"]["dice"]["mean"]) for a in s.get("arms", [])
            if a.get("n_runs") and a.get("last", {}).get("dice", {}).get("n")]  # fmt: skip
    if gaps:
        arm, gap = max(gaps, key=lambda t: abs(t[1]))
        out.append(f"Last checkpoint minus selected checkpoint, mean test Dice: largest difference {gap:+.4f} ({arm}).")
    failed = s.get("runs", {}).get("failed") or []
    if failed:
        out.append(f"{len(failed)} of {s['runs']['planned']} planned runs did not finish; the tables leave them out.")
    return out


def _command(s: dict[str, Any]) -> str:
    """The ``arco study`` command of the study's last invocation (as recorded in its history)."""
    h = (s.get("history") or [{}])[-1]
    parts = ["arco study", str(s["study"]), "--out", Path(s["folder"]).name, "--jobs", str(h.get("jobs", 1))]
    for o in h.get("set") or []:
        parts += ["--set", o if " " not in o else repr(o)]
    if h.get("seeds"):
        parts += ["--seeds", *map(str, h["seeds"])]
    for r in h.get("reuse") or []:
        parts += ["--reuse", Path(r).name]
    if h.get("fast"):
        parts.append("--fast")
    return " ".join(parts)


def _copy_figures(s: dict[str, Any], figures: Path, prefix: str) -> list[Path]:
    figures.mkdir(parents=True, exist_ok=True)
    out = []
    for name in s.get("figures") or []:
        src = Path(s["folder"]) / name
        if src.is_file():
            dst = figures / f"{prefix}-{name}"
            shutil.copyfile(src, dst)
            out.append(dst)
    return out


def _study_section(s: dict[str, Any], page: Path, figures: list[Path]) -> list[str]:
    runs = s["runs"]
    out = [f"## {s['study']}", ""]
    if s.get("description"):
        out += [s["description"], ""]
    out += [
        f"`{_command(s)}`: seeds {s['seeds']}, {runs['finished']} of {runs['planned']} runs finished. "
        + provenance_line(s),
        "",
        s["selection_note"],
        "",
        "**Reading.**",
        "",
        *(f"- {line}" for line in reading(s)),
        "",
        *markdown_sections(s, level=3),
    ]
    variance = load_variance(s["folder"]) if s.get("folder") else None
    if variance:
        out += variance_md(variance, level=3)
    if figures:
        out += ["### Figures", ""]
        out += [f"![{s['study']}: {f.stem}]({os.path.relpath(f, page.parent)})" for f in figures]
        out.append("")
    return out


def results_page(
    studies: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    figures: str | os.PathLike | None = None,
    title: str = "Results",
    command: str | None = None,
) -> dict[str, list[Path]]:
    """Write the results page ``out`` (markdown) from finished study folders, in the order given; their figures
    are copied into ``figures`` (default: ``figures/results`` next to the page). Returns study name -> copied
    figures.

    Raises:
        ConfigError: a folder without ``study.json``.
    """
    page = Path(out)
    fig_dir = Path(figures) if figures is not None else page.parent / "figures" / "results"
    summaries = [load_summary(d) for d in studies]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"# {title}",
        "",
        f"<!-- generated by `{command or 'arco study report'}` on {when}; do not edit by hand: rerun the command -->",
        "",
        f"This page is generated by `{command or 'arco study report DIR ... --out PAGE'}` from the study folders "
        "below; every number and figure comes from their `study.json` and PNG files. Each study's commit, machine and "
        "wall time are the ones `arco study` recorded when it ran.",
        "",
    ]
    copied: dict[str, list[Path]] = {}
    for s in summaries:
        prefix = s["study"] if s["study"] not in copied else f"{s['study']}-{len(copied)}"
        copied[prefix] = _copy_figures(s, fig_dir, prefix)
        lines += _study_section(s, page, copied[prefix])
    atomic_write_text(page, "\n".join(lines).rstrip() + "\n")
    return copied


def _cell(a: dict[str, Any] | None) -> str:
    if not a or not a.get("n_runs"):
        return "n/a"
    e = a["mean"]["dice"]
    return f"{e['mean']:.4f} ± {e['std']:.4f}" if e.get("n", 0) > 1 and e.get("std") is not None else f"{e['mean']:.4f}"


def _pivot(s: dict[str, Any]) -> tuple[str | None, list[str], list[str], dict[tuple[str, str], str]]:
    """(compared axis, its values, the groups (settings of the other axes), (value, group) -> arm name)."""
    axes = list(s["axes"])
    refs = s.get("references") or ([s["compare_to"]] if s.get("compare_to") else [])
    axis = next(iter(refs[0])) if refs else (axes[0] if axes else None)
    cells: dict[tuple[str, str], str] = {}
    groups: list[str] = []
    for a in s["arms"]:
        value = a["values"].get(axis, a["arm"]) if axis else a["arm"]
        group = ", ".join(f"{k}={v}" for k, v in a["values"].items() if k != axis) or s["study"]
        groups.append(group)
        cells[(value, group)] = a["arm"]
    values = list(dict.fromkeys(v for v, _ in cells))
    return axis, values, list(dict.fromkeys(groups)), cells


def headline_block(s: dict[str, Any], page: Path, readme: Path, figure: Path | None) -> str:
    """The README block of study ``s``: provenance, test Dice and the paired difference to the first reference per
    compared value and group, a link to the results page and the study's Dice figure."""
    axis, values, groups, cells = _pivot(s)
    arms = {a["arm"]: a for a in s["arms"]}
    first = (s.get("comparisons") or [{}])[0].get("compare_to", "")
    diffs = {c["arm"]: c for c in s.get("comparisons") or [] if c.get("compare_to", "") == first}
    n = max((a["n_runs"] for a in s["arms"]), default=0)
    link = os.path.relpath(page, readme.parent)
    what = re.sub(r"\s*\([^()]*\)\s*$", "", s.get("description", ""))  # without the estimate in parentheses
    lines = [
        f"Generated by `arco study report` from `{_command(s)}` ({s['study']}: {what}); " + provenance_line(s),
        "",
        f"Test mean foreground Dice of the selected (best-on-validation) checkpoints, mean ± std over {n} seeds:",
        "",
        "| " + " | ".join([axis or "arm", *groups]) + " |",
        "|" + "---|" * (len(groups) + 1),
    ]
    for v in values:
        lines.append("| " + " | ".join([v, *(_cell(arms.get(cells.get((v, g), "")))
                                            for g in groups)]) + " |")  # fmt: skip
    if diffs:
        lines += ["", f"Paired difference to {first} (mean over seed × test case, 95 % bootstrap interval):", "",
                  "| " + " | ".join([axis or "arm", *groups]) + " |", "|" + "---|" * (len(groups) + 1)]  # fmt: skip
        for v in values:
            row = []
            for g in groups:
                c = diffs.get(cells.get((v, g), ""))
                row.append(f"{_d(c.get('mean'))} [{_d(c.get('ci_low'))}, {_d(c.get('ci_high'))}]" if c else "-")
            lines.append("| " + " | ".join([v, *row]) + " |")
    lines += ["", f"Every table, the tuning choices, the convergence check and the figures: [results]({link})."]
    if figure is not None:
        lines += ["", f"![{s['study']}: test Dice per arm and seed]({os.path.relpath(figure, readme.parent)})"]
    return "\n".join(lines)


def write_headline(readme: str | os.PathLike, study: str | os.PathLike, page: str | os.PathLike,
                   figure: Path | None = None) -> None:  # fmt: skip
    """Replace the text between the README's headline markers by :func:`headline_block` of the study folder
    ``study``; everything outside the markers is kept byte for byte.

    Raises:
        ConfigError: the README lacks the markers, has them twice or in the wrong order.
    """
    path = Path(readme)
    text = path.read_text()
    if text.count(HEADLINE_START) != 1 or text.count(HEADLINE_END) != 1:
        raise ConfigError(f"{path} must hold {HEADLINE_START} and {HEADLINE_END} once each (the block to rewrite)")
    start, end = text.index(HEADLINE_START) + len(HEADLINE_START), text.index(HEADLINE_END)
    if end < start:
        raise ConfigError(f"{path}: {HEADLINE_END} comes before {HEADLINE_START}")
    block = headline_block(load_summary(study), Path(page), path, figure)
    atomic_write_text(path, text[:start] + "\n" + block + "\n" + text[end:])
