"""A study's qualitative panels (the paper's Fig. 4): for each reference arm, the image, the ground truth and
every compared arm's prediction of the same test slices, with each arm's Dice in its title.

Rule (documented in the report): for each arm that others are compared to (``compare_to``; without it, the first
arm), at the first seed with the most finished runs of its group (arms without a finished run there are left
out), the cases are that arm's median and worst test
case by mean foreground Dice (:func:`arco.compare.choose_cases`), each at the slice with the most ground-truth
foreground. The predictions come from each run's selected checkpoint (best on validation), the one the numbers
were computed with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arco.study.collect import RunResult
from arco.study.figures import arm_label, compared_axis
from arco.study.spec import StudySpec

__all__ = ["panel_groups", "write_qualitative", "RULE"]

logger = logging.getLogger(__name__)

RULE = (
    "for each reference arm (compare_to; without it the first arm), at the first seed with the most finished runs "
    "of its group: that arm's median and worst test case by mean foreground Dice, at the slice with the most "
    "ground-truth foreground, with every arm's prediction; titles give each arm's Dice over the whole case"
)


def panel_groups(spec: StudySpec) -> dict[str, list[str]]:
    """Reference arm -> the arms shown beside it (the reference first), in grid order."""
    arms = spec.arms()
    if not spec.compare_to:
        return {arms[0].name: [a.name for a in arms]}
    groups: dict[str, list[str]] = {}
    for arm in arms:
        ref = spec.reference(arm)
        if ref is None:
            groups.setdefault(arm.name, []).insert(0, arm.name)
        else:
            groups.setdefault(ref, []).append(arm.name)
    return groups


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def _group_panel(spec, ref: str, members: list[str], results, out: Path, name: str) -> dict[str, Any] | None:
    from arco.checkpoint import resolve_checkpoint
    from arco.compare import panel_rows
    from arco.data import build_data
    from arco.evaluation.overlay import save_panel

    done = {(r.arm, r.seed): r for r in results}
    seeds = [s for s in spec.seeds if (ref, s) in done]
    if not seeds:
        logger.warning("qualitative panel of %s: no run of the reference arm finished", ref)
        return None
    seed = max(seeds, key=lambda s: (sum((a, s) in done for a in members), -seeds.index(s)))
    members = [a for a in members if (a, seed) in done]
    by_key = {key: r.run for key, r in done.items()}
    ref_run = by_key[(ref, seed)]
    data = build_data(ref_run.config.data)
    arms = {a.name: a for a in spec.arms()}
    labels = {a: arm_label(spec, arms[a]) for a in members}
    if len(set(labels.values())) < len(members):  # the compared value does not tell them apart: full names
        labels = {a: a for a in members}
    checkpoints = {
        labels[a]: resolve_checkpoint(by_key[(a, seed)].folder / by_key[(a, seed)].config.stages[-1].name)
        for a in members
    }
    rows = panel_rows(
        checkpoints,
        {labels[a]: done[(a, seed)].case_dice() for a in members},
        labels[ref],
        {v.case_id: v for v in data.test},
        device="cpu",
        batch_size=ref_run.config.engine.val_batch,
    )
    group = ", ".join(f"{k}={v}" for k, v in arms[ref].values.items() if k != compared_axis(spec))
    meta = save_panel(
        out / name,
        rows,
        data.num_classes,
        data.class_names,
        title=f"{spec.name}{': ' + group if group else ''}: median and worst test case of {labels[ref]} "
        f"(seed {seed}); Dice over the whole case",
    )
    return {"file": name, "reference": ref, "seed": seed, "arms": members, **meta}


def write_qualitative(spec: StudySpec, results: Sequence[RunResult], out: Path) -> list[dict[str, Any]]:
    """Write ``qualitative.png`` (one reference arm) or ``qualitative_<arm>.png`` (one per reference arm) into
    ``out``; returns, per figure, its file name, reference, seed, arms and the panel titles (what it shows).

    Predictions run on the CPU, two cases per arm. A group whose reference arm has no finished run is left out
    (with a warning).
    """
    groups = panel_groups(spec)
    panels = []
    for ref, members in groups.items():
        name = "qualitative.png" if len(groups) == 1 else f"qualitative_{_slug(ref)}.png"
        panel = _group_panel(spec, ref, members, results, out, name)
        if panel is not None:
            panels.append(panel)
    return panels
