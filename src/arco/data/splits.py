"""Label-ratio splits by patient (never by slice): a count, a fraction, ``all`` or a list of ids."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from arco._checks import ConfigError, DataError, choice

__all__ = [
    "SPLIT_RULES",
    "ACDC_SSL4MIS_SLICES",
    "patient_of",
    "parse_labeled",
    "select_labeled",
    "ssl4mis_rows",
    "holdout",
    "possible_labeled",
]

SPLIT_RULES = ("patients", "ssl4mis")

# SSL4MIS `patients_to_slices("ACDC", n)` (+ ARCO's 1 -> 23): the first rows of ACDC's train_slices.list.
ACDC_SSL4MIS_SLICES = {1: 23, 3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 70: 1312}

_FRAME = re.compile(r"_frame\d+$")
_SLICE = re.compile(r"_slice_\d+$")


def patient_of(case_id: str) -> str:
    """Patient of a case or slice id: ``patient001_frame01_slice_3`` -> ``patient001`` (ACDC has 2 frames
    each)."""
    return _FRAME.sub("", _SLICE.sub("", case_id))


def parse_labeled(labeled: str | int | float) -> tuple[str, object]:
    """Parse ``data.labeled`` into ``("count", int) | ("fraction", float) | ("all", None) | ("ids",
    list)``."""
    text = str(labeled).strip()
    if text.lower() == "all":
        return "all", None
    if "," in text or re.search(r"[A-Za-z_]", text):
        ids = [t.strip() for t in text.split(",") if t.strip()]
        if not ids:
            raise ConfigError(f"data.labeled: empty list of case ids in {labeled!r}")
        return "ids", ids
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            f"data.labeled must be a count ('3'), a fraction ('0.1'), 'all' or a comma list of case ids; "
            f"got {labeled!r}"
        ) from None
    if "." in text or "e" in text.lower():
        if not 0 < value <= 1:
            raise ConfigError(f"data.labeled: a fraction must be in (0, 1], got {labeled!r}")
        return "fraction", value
    if value != int(value):
        raise ConfigError(f"data.labeled: a count must be a positive integer, got {labeled!r}")
    if value < 1:
        raise DataError(f"data.labeled={labeled!r} gives an empty labeled set; label at least one case")
    return "count", int(value)


def possible_labeled(n: int) -> str:
    """What ``data.labeled`` can be with ``n`` training cases, and what each choice allows."""
    if n <= 1:
        return (
            f"data.labeled={n} labels every training case, so no unlabeled case is left: train the supervised "
            "method (arco train --method supervised), or add unlabeled cases for semi-supervised training"
        )
    return (
        f"data.labeled=1..{n - 1} keeps unlabeled cases for semi-supervised training; data.labeled={n} "
        "(or 'all') labels every training case (supervised method only)"
    )


def select_labeled(
    patients: Sequence[str], labeled: str | int | float, where: str = "", held_out: str = ""
) -> list[str]:
    """Return the labeled patients among ``patients`` (kept in their given order; counts take the first N).

    Args:
        patients: training patients (val/test already removed).
        labeled: ``data.labeled`` (count, fraction, ``all`` or ids).
        where: the file or folder they come from (named in errors).
        held_out: what was removed before (e.g. "1 case held out for validation and 1 for test"), for errors.

    Raises:
        ConfigError: bad ``labeled`` string.
        DataError: more labeled patients requested than exist (saying which counts are possible), unknown
            ids, or an empty result.
    """
    kind, value = parse_labeled(labeled)
    n = len(patients)
    src = f" in {where}" if where else ""
    src += f" ({held_out})" if held_out else ""
    if n == 0:
        raise DataError(f"no training cases{src}; check the list files / folder, or add cases")
    if kind == "all":
        return list(patients)
    if kind == "count":
        if value > n:
            raise DataError(
                f"data.labeled={value} but only {n} training {'patients exist' if n > 1 else 'patient exists'}{src}. "
                f"Possible: {possible_labeled(n)}"
            )
        return list(patients[:value])
    if kind == "fraction":
        return list(patients[: max(1, int(math.floor(value * n + 0.5)))])
    wanted = set()
    unknown = []
    known = set(patients)
    for i in value:
        p = i if i in known else patient_of(i)
        (wanted.add(p) if p in known else unknown.append(i))
    if unknown:
        raise DataError(f"data.labeled names case(s) {unknown} that are not training cases{src}")
    return [p for p in patients if p in wanted]


def ssl4mis_rows(slice_ids: Sequence[str], count: int, acdc: bool) -> int:
    """Number of leading rows of ``train_slices.list`` that make ``count`` labeled patients (SSL4MIS rule).

    On ACDC the reference table applies (1 -> 23: a partial patient, 3 -> 68, 7 -> 136); otherwise (or for
    counts
    not in the table) the rows of the first ``count`` patients in list order.
    """
    if acdc and count in ACDC_SSL4MIS_SLICES and ACDC_SSL4MIS_SLICES[count] <= len(slice_ids):
        return ACDC_SSL4MIS_SLICES[count]
    seen: list[str] = []
    for i, s in enumerate(slice_ids):
        p = patient_of(s)
        if p not in seen:
            if len(seen) == count:
                return i
            seen.append(p)
    if len(seen) < count:
        raise DataError(
            f"data.labeled={count} but train_slices.list has only {len(seen)} patients. "
            f"Possible: {possible_labeled(len(seen))}"
        )
    return len(slice_ids)


def holdout(cases: Sequence[str], fraction: float, seed: int | None = None, minimum: int = 1) -> tuple[list, list]:
    """Split ``cases`` into ``(kept, held)``; ``held`` is the last ``round(fraction*n)`` (>= ``minimum``)
    cases of a
    seeded permutation (``seed=None``: of the given order). ``fraction=0`` holds nothing out."""
    cases = list(cases)
    if fraction <= 0:
        return cases, []
    order = cases if seed is None else [cases[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    k = min(len(cases) - 1, max(minimum, int(round(fraction * len(cases)))))
    held = set(order[len(order) - k :]) if k > 0 else set()
    return [c for c in cases if c not in held], [c for c in cases if c in held]


def check_rule(rule: str) -> str:
    return choice("data.split_rule", rule, SPLIT_RULES)
