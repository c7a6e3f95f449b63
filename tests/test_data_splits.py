"""Label-ratio splits: by patient, never by slice; the SSL4MIS ACDC convention."""

from __future__ import annotations

import pytest

from arco._checks import ConfigError, DataError
from arco.data.splits import (
    ACDC_SSL4MIS_SLICES,
    holdout,
    parse_labeled,
    patient_of,
    select_labeled,
    ssl4mis_rows,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3", ("count", 3)),
        ("0.1", ("fraction", 0.1)),
        ("1.0", ("fraction", 1.0)),
        ("all", ("all", None)),
        ("case001,case004", ("ids", ["case001", "case004"])),
        ("patient001", ("ids", ["patient001"])),
    ],
)
def test_parse_labeled(text, expected):
    assert parse_labeled(text) == expected


@pytest.mark.parametrize(
    "text, err, match",
    [
        ("1.5", ConfigError, "fraction"),
        ("0", DataError, "empty labeled set"),
        ("1.2.3", ConfigError, "a count"),
    ],
)
def test_parse_labeled_errors(text, err, match):
    with pytest.raises(err, match=match):
        parse_labeled(text)


def test_patient_of():
    assert patient_of("patient001_frame01_slice_3") == "patient001"
    assert patient_of("patient001_frame12") == "patient001"
    assert patient_of("case007_slice_0") == "case007"
    assert patient_of("la_case") == "la_case"


def test_select_labeled_by_patient():
    pats = [f"p{i}" for i in range(10)]
    assert select_labeled(pats, "3") == ["p0", "p1", "p2"]
    assert select_labeled(pats, "0.25") == ["p0", "p1", "p2"]  # round(2.5) half up
    assert select_labeled(pats, "0.01") == ["p0"]  # at least one
    assert select_labeled(pats, "p7,p2") == ["p2", "p7"]
    assert select_labeled(pats, "all") == pats
    with pytest.raises(DataError, match="only 10 training patients"):
        select_labeled(pats, "11")
    with pytest.raises(DataError, match="p99"):
        select_labeled(pats, "p99")


def _acdc_like_slices():
    # 70 patients x 2 frames x 10 slices, except patient 1 whose two frames have 9 + 14 = 23 slices
    rows = []
    for p in range(1, 71):
        for f, n in ((1, 9 if p == 1 else 10), (2, 14 if p == 1 else 10)):
            rows += [f"patient{p:03d}_frame{f:02d}_slice_{k}" for k in range(n)]
    return rows


def test_ssl4mis_rows_acdc_table():
    rows = _acdc_like_slices()
    assert ssl4mis_rows(rows, 1, acdc=True) == 23
    assert ssl4mis_rows(rows, 3, acdc=True) == 68
    assert ssl4mis_rows(rows, 7, acdc=True) == 136
    assert ACDC_SSL4MIS_SLICES[3] == 68


def test_ssl4mis_rows_generic_counts_whole_patients():
    rows = _acdc_like_slices()
    assert ssl4mis_rows(rows, 1, acdc=False) == 23
    assert ssl4mis_rows(rows, 2, acdc=False) == 43
    with pytest.raises(DataError, match="only 70 patients"):
        ssl4mis_rows(rows, 71, acdc=False)


def test_holdout():
    cases = [f"c{i}" for i in range(10)]
    kept, held = holdout(cases, 0.2)
    assert held == ["c8", "c9"] and kept == cases[:8]
    kept2, held2 = holdout(cases, 0.2, seed=1)
    assert sorted(kept2 + held2) == sorted(cases) and len(held2) == 2
    assert holdout(cases, 0.2, seed=1) == (kept2, held2)
    assert holdout(cases, 0.0) == (cases, [])
