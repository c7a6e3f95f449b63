"""What the dataset converters share: finding the case folders of a download and splitting the cases into the
public lists (when every listed case is there) or a seeded split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arco._checks import DataError

__all__ = ["find_cases", "split_cases"]


def find_cases(raw: Path, marker: str, noun: str, shown: str, fix: str) -> dict[str, Path]:
    """``case id -> folder`` for every folder of ``raw`` (or one level below) that holds ``marker`` (a glob
    relative to the case folder's parent, e.g. ``patient*/Info.cfg``).

    Raises:
        DataError: ``raw`` is not a folder, a case is found twice, or none is found; ``noun`` names a case
            (``patient``), ``shown`` the expected layout (``patientXXX/Info.cfg``) and ``fix`` what to give instead.
    """
    if not raw.is_dir():
        raise DataError(f"{raw}: folder not found; give {fix}")
    found = sorted(raw.glob(marker)) or sorted(raw.glob(f"*/{marker}"))
    cases: dict[str, Path] = {}
    for f in found:
        name = f.parent.name
        if name in cases:
            raise DataError(f"{f.parent}: {noun} {name} also in {cases[name]}; keep one copy")
        cases[name] = f.parent
    if not cases:
        raise DataError(f"{raw}: no {shown} found (also looked one level down); give {fix}")
    return cases


def split_cases(
    cases: list[str], standard: dict[str, list[str]], fractions: dict[str, float], seed: int, minimum: int
) -> dict[str, list[str]]:
    """The ``standard`` lists (``{part: cases}``) when every listed case is there (the others -> ``extra``), else a
    seeded split: each part of ``fractions`` (in order, after ``train``) gets ``round(fraction * n)`` cases, at
    least one, from ``minimum`` cases on (none below); ``train`` the rest."""
    listed = [c for part in standard.values() for c in part]
    if set(listed) <= set(cases):
        return {**standard, "extra": sorted(set(cases) - set(listed))}
    order = [sorted(cases)[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    n = len(order)
    counts = {part: max(1, int(round(f * n))) if n >= minimum else 0 for part, f in fractions.items()}
    n_train = n - sum(counts.values())
    out, start = {"train": order[:n_train]}, n_train
    for part, count in counts.items():
        out[part], start = order[start : start + count], start + count
    return out
