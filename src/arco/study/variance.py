"""The samplers' variance on a finished study's trained runs (``arco study variance DIR``).

For every arm whose runs end in a contrastive stage 2 (ARCO with either loss, MONA, the pixel-level frameworks of
``finetune.framework``), :func:`arco.contrast_variance.measure` is run on one seed's ``finetune`` folder: the
variance of L_contrast and of its gradient over sampler draws at the run's final weights, per sampler, with the
ratio to NS. Each arm's table goes to ``DIR/variance/<arm>/contrast_variance.csv/.png``; ``DIR/variance.csv`` holds
all of them, and ``arco study report`` shows that file as a table under the study. Arms without such a stage (the
supervised baseline, Mean Teacher, ...) are listed as skipped. An arm measured before with the same seed, draws,
batches and samplers is read back, not measured again, so an interrupted call continues where it stopped.
``arms`` (glob patterns such as ``*_sg``) limits what is measured in one call; arms measured earlier with the same
settings stay in ``variance.csv``, so the table grows over calls.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from arco._checks import CheckpointError, ConfigError
from arco._io import atomic_write_text

__all__ = ["measure_study", "load_variance", "variance_md", "SUMMARY"]

#: The study folder's table of every measured arm.
SUMMARY = "variance.csv"
_FIELDS = ("arm", "seed", "sampler", "draws", "batches", "loss_var_ratio", "grad_var_ratio", "loss_var", "grad_var")


def _arms(folder: Path) -> list[str]:
    path = folder / "study.json"
    if path.is_file():
        return [a["arm"] for a in json.loads(path.read_text()).get("arms", [])]
    return sorted(p.name for p in (folder / "runs").iterdir() if p.is_dir()) if (folder / "runs").is_dir() else []


def _select(names: Sequence[str], patterns: Sequence[str] | None, folder: Path) -> set[str]:
    """The arms matching any glob of ``patterns`` (every arm when None)."""
    if not patterns:
        return set(names)
    chosen: set[str] = set()
    for pat in patterns:
        hit = fnmatch.filter(names, pat)
        if not hit:
            raise ConfigError(
                f"--arms {pat!r} matches no arm of {folder}; its arms are: {', '.join(names)} "
                "(globs such as '*_sg' select several)"
            )
        chosen.update(hit)
    return chosen


def _cached(path: Path, seed: int, draws: int, batches: int, samplers: Sequence[str]) -> list[dict] | None:
    """The arm's rows from an earlier call with the same settings, else None."""
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    same = [r["sampler"] for r in rows] == list(samplers) and all(
        r.get("seed") == str(seed) and r["draws"] == str(draws) and r["batches"] == str(batches) for r in rows
    )
    return rows if same else None


def measure_study(
    folder: str | os.PathLike,
    seed: int = 0,
    samplers: Sequence[str] = ("ns", "sg", "sag"),
    draws: int = 64,
    batches: int = 4,
    device: str = "cpu",
    report: Callable[[str], None] = print,
    arms: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Measure every arm of the study in ``folder`` (or those matching a glob of ``arms``) at run ``seed``;
    returns the rows written to ``variance.csv``: the arms measured now and those measured before with the same
    settings.

    Raises:
        ConfigError: ``folder`` holds no study runs, a pattern of ``arms`` matches none of them, or no arm has a
            contrastive stage 2 at that seed.
    """
    from arco.contrast_variance import load_run, measure, write_outputs

    folder = Path(folder)
    names = _arms(folder)
    if not names:
        raise ConfigError(f"{folder} holds no study runs: give a folder written by `arco study NAME --out DIR`")
    chosen = _select(names, arms, folder)
    rows: list[dict[str, Any]] = []
    for arm in names:
        out = folder / "variance" / arm
        got = _cached(out / "arm_variance.csv", seed, draws, batches, samplers)
        if arm not in chosen:
            rows += got or []
            continue
        stage = folder / "runs" / arm / f"seed{seed}" / "finetune"
        if not (stage / "summary.json").is_file():
            report(f"skipped {arm}: no finished contrastive stage 2 at {stage}")
            continue
        if got is None:
            try:
                run = load_run(stage, device=device)
            except CheckpointError as exc:  # a finetune stage of another method (BCP's is selftrain, but plug-ins)
                report(f"skipped {arm}: {exc}")
                continue
            measured = measure(run, samplers, draws, batches, seed=seed)
            out.mkdir(parents=True, exist_ok=True)
            write_outputs(measured, out, title=f"{arm}/seed{seed}")
            got = [{"arm": arm, "seed": seed, **{k: r[k] for k in _FIELDS[2:]}} for r in measured]
            atomic_write_text(out / "arm_variance.csv", _csv(got))
        rows += got
        ratios = ", ".join(f"{r['sampler']} {float(r['grad_var_ratio']):.3f}" for r in got)
        report(f"measured {arm}: Var grad / NS {ratios}")
    if not rows:
        raise ConfigError(f"no arm of {folder} has a finished contrastive stage 2 (finetune) at seed {seed}")
    atomic_write_text(folder / SUMMARY, _csv(rows))
    return rows


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(_FIELDS), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def load_variance(folder: str | os.PathLike) -> list[dict[str, str]] | None:
    """The rows of ``DIR/variance.csv``, or None when the study has not been measured."""
    path = Path(folder) / SUMMARY
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def variance_md(rows: Sequence[dict[str, Any]], level: int = 3) -> list[str]:
    """Markdown: one row per arm, the ratio to NS of the variance of L_contrast and of its gradient per sampler."""
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    by_arm: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], {})[r["sampler"]] = r
    r0 = rows[0]
    head = ["arm", *(f"Var L / NS: {s}" for s in samplers), *(f"Var grad / NS: {s}" for s in samplers)]
    out = [
        "#" * level + " Sampler variance on trained runs",
        "",
        f"`arco study variance` at seed {r0['seed']}: {r0['draws']} sampler draws on each of {r0['batches']} training "
        "batches at each run's final weights; the variance of L_contrast and of its gradient with respect to the "
        "representation head, as a ratio to NS (below 1: less noisy than naive sampling).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for arm, per in by_arm.items():
        cells = [f"{float(per[s]['loss_var_ratio']):.3f}" if s in per else "-" for s in samplers]
        cells += [f"{float(per[s]['grad_var_ratio']):.3f}" if s in per else "-" for s in samplers]
        out.append("| " + " | ".join([arm, *cells]) + " |")
    return [*out, ""]
