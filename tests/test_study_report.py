"""Study summaries from fixed per-run numbers: means over seeds, paired differences, selection by validation,
figures."""

from __future__ import annotations

import pytest

from _study import write_study
from arco.study import expand, load_study, paired_difference
from arco.study.collect import RunResult
from arco.study.figures import labeled_axis, write_figures
from arco.study.report import summarise, write_report

# (lam, labeled, seed) -> (val Dice, test Dice of case a, case b): lam=big wins on validation, loses on test.
NUMBERS = {
    ("small", "1", 0): (0.60, 0.70, 0.80),
    ("small", "1", 1): (0.62, 0.72, 0.78),
    ("big", "1", 0): (0.70, 0.60, 0.70),
    ("big", "1", 1): (0.66, 0.61, 0.69),
    ("small", "2", 0): (0.75, 0.85, 0.86),
    ("small", "2", 1): (0.74, 0.84, 0.88),
    ("big", "2", 0): (0.70, 0.90, 0.91),
    ("big", "2", 1): (0.69, 0.92, 0.90),
}


def _result(run) -> RunResult:
    lam, lab = run.arm.values["lam"], run.arm.values["labeled"]
    val, a, b = NUMBERS[(lam, lab, run.seed)]
    r = RunResult(run, ["lam", "labeled"])
    r.cases = [{"case": c, "class": "fg", "dice": d} for c, d in (("a", a), ("b", b))]
    r.per_class = {"fg": {"dice": (a + b) / 2, "hd95": 1.0, "asd": 0.5}}
    r.mean = {"dice": (a + b) / 2, "jaccard": 0.5, "hd95": 1.0, "asd": 0.5}
    r.val_dice, r.iterations, r.train_seconds = val, 10, 1.0
    r.curves = [{"iteration": i, "val_dice": val * i / 3, "loss_contrast": 1.0 / i} for i in (1, 2, 3)]
    r.stage_ends = [1, 3]
    return r


@pytest.fixture
def study(tmp_path):
    grid = {
        "lam": {"small": ["finetune.lambda_unsup=0.1"], "big": ["finetune.lambda_unsup=1"]},
        "labeled": {"1": ["data.labeled=1"], "2": ["data.labeled=2"]},
    }
    path = write_study(tmp_path / "s.yaml", tmp_path / "d", grid, seeds=(0, 1), compare_to={"lam": "small"},
                       select_by_val=["lam"])  # fmt: skip
    spec = load_study(str(path))
    return spec, [_result(r) for r in expand(spec, tmp_path / "out")]


def test_summary_means_pairs_and_selection(study, tmp_path):
    spec, results = study
    s = summarise(spec, results, planned=8, failed=[], fast=False)
    arms = {a["arm"]: a for a in s["arms"]}
    small1 = arms["small_labeled1"]["mean"]["dice"]
    assert small1["n"] == 2 and small1["mean"] == pytest.approx((0.75 + 0.75) / 2)
    assert small1["std"] == pytest.approx(0.0, abs=1e-12)
    assert arms["big_labeled2"]["val_dice"]["mean"] == pytest.approx(0.695)
    cmp = {c["arm"]: c for c in s["comparisons"]}
    assert set(cmp) == {"big_labeled1", "big_labeled2"}  # each against small at the same labeled count
    c = cmp["big_labeled1"]
    assert (c["reference"], c["n_pairs"], c["n_runs"], c["seeds"]) == ("small_labeled1", 4, 4, [0, 1])
    ref = paired_difference([0.60, 0.70, 0.61, 0.69], [0.70, 0.80, 0.72, 0.78])  # (seed, case) pairs in order
    assert c["mean"] == pytest.approx(ref["mean"]) and c["ci_low"] == pytest.approx(ref["ci_low"])
    assert c["p_wilcoxon"] == pytest.approx(ref["p_wilcoxon"])
    # selection by validation only: labeled 1 picks big (better val, worse test), labeled 2 picks small
    sel = {tuple(e["fixed"].items()): e for e in s["selection"]}
    assert sel[(("labeled", "1"),)]["selected"] == {"lam": "big"}
    assert sel[(("labeled", "1"),)]["test_dice"]["mean"] == pytest.approx((0.65 + 0.65) / 2)
    assert sel[(("labeled", "2"),)]["selected"] == {"lam": "small"}

    figures = write_figures(spec, results, tmp_path)
    assert figures == ["dice_per_arm.png", "curves.png", "dice_vs_labeled.png"] and labeled_axis(spec) == "labeled"
    for f in figures:
        assert (tmp_path / f).stat().st_size > 1000
    write_report(s, tmp_path, figures)
    md = (tmp_path / "study.md").read_text()
    assert "## Chosen by validation" in md and "test numbers were not consulted" in md
    assert "| big_labeled1 | small_labeled1 |" in md and "![dice_vs_labeled](dice_vs_labeled.png)" in md


def _with_last(results, late_arm):
    """Give every run a last checkpoint (test Dice 0.01 below the selected one) and a peak iteration: 9 of 10 for
    ``late_arm``'s runs, 5 of 10 for the others."""
    for r in results:
        r.last_cases = [{**c, "dice": float(c["dice"]) - 0.01} for c in r.cases]
        r.last_mean = {**r.mean, "dice": r.mean["dice"] - 0.01}
        r.last_per_class = {"fg": {**r.per_class["fg"], "dice": r.per_class["fg"]["dice"] - 0.01}}
        r.best_iteration = 10 if r.arm == late_arm else 5
    return results


def test_last_checkpoint_peaks_and_several_references(tmp_path):
    grid = {
        "lam": {"small": ["finetune.lambda_unsup=0.1"], "big": ["finetune.lambda_unsup=1"]},
        "labeled": {"1": ["data.labeled=1"], "2": ["data.labeled=2"]},
    }
    path = write_study(tmp_path / "s.yaml", tmp_path / "d", grid, seeds=(0, 1),
                       compare_to=[{"lam": "small"}, {"lam": "big"}])  # fmt: skip
    spec = load_study(str(path))
    assert spec.compare_to == {"lam": "small"} and len(spec.references) == 2
    results = _with_last([_result(r) for r in expand(spec, tmp_path / "out")], "big_labeled2")
    s = summarise(spec, results, planned=8, failed=[], fast=False)
    cmp = {(c["arm"], c["compare_to"]) for c in s["comparisons"]}
    assert cmp == {("big_labeled1", "lam = small"), ("big_labeled2", "lam = small"), ("small_labeled1", "lam = big"),
                   ("small_labeled2", "lam = big")}  # fmt: skip
    last = {c["arm"]: c for c in s["comparisons_last"] if c["compare_to"] == "lam = small"}
    best = {c["arm"]: c for c in s["comparisons"] if c["compare_to"] == "lam = small"}
    assert last["big_labeled1"]["mean"] == pytest.approx(best["big_labeled1"]["mean"])  # both shifted by 0.01
    arms = {a["arm"]: a for a in s["arms"]}
    assert arms["small_labeled1"]["last"]["dice"]["mean"] == pytest.approx(0.75 - 0.01)
    conv = {c["arm"]: c for c in s["convergence"]}
    assert conv["big_labeled2"]["late"] and conv["big_labeled2"]["fraction"]["median"] == 1.0
    assert not conv["small_labeled1"]["late"] and conv["small_labeled1"]["best_iteration"]["median"] == 5
    write_report(s, tmp_path, [])
    md = (tmp_path / "study.md").read_text()
    assert "## Paired differences to the reference (lam = big), selected checkpoint" in md
    assert "## Paired differences to the reference (lam = small), last checkpoint" in md
    assert "| big_labeled2 | 10 | 10 [10, 10] | 1.00 [1.00, 1.00] | **may need a longer schedule** |" in md
    assert "| small_labeled1 | 10 | 5 [5, 5] | 0.50 [0.50, 0.50] |  |" in md
    assert "| small_labeled1 | small | 1 | 2 | 0.7500 ± 0.0000 | 0.7500 ± 0.0000 | 0.7400 ± 0.0000 |" in md


def test_an_axis_called_arm_is_not_repeated_as_a_column():
    """A study whose one axis is ``arm`` (arm names = its values) shows the arm once; other axes stay columns."""
    from arco.study.collect import shown_axes
    from arco.study.report import _metrics_md

    entry = {"dice": {"mean": 0.5, "std": 0.1, "n": 2}}
    arm = {"n_runs": 2, "classes": {"RV": entry}, "mean": {"dice": entry["dice"], "hd95": entry["dice"],
           "asd": entry["dice"]}, "val_dice": entry["dice"]}  # fmt: skip
    s = {"axes": {"arm": ["a", "b"]}, "arms": [{**arm, "arm": "a", "values": {"arm": "a"}},
                                              {**arm, "arm": "b", "values": {"arm": "b"}}]}  # fmt: skip
    assert shown_axes(s) == []
    assert _metrics_md(s)[2].startswith("| arm | runs |")
    x_a = {**arm, "arm": "x_a", "values": {"dataset": "x", "arm": "a"}}
    two = {"axes": {"dataset": ["x"], "arm": ["a"]}, "arms": [x_a]}
    assert shown_axes(two) == ["dataset", "arm"]


def test_csv_files_keep_the_run_arm_when_an_axis_is_called_arm(tmp_path):
    """A block x arm study: ``arm`` holds the run's arm (``b0_sup``), the axis value goes to ``arm_axis``; with the axis
    written under ``arm`` too, readers of the CSV (scripts/paired_arms.py) merged the blocks."""
    import csv
    from types import SimpleNamespace

    from arco.study.collect import write_per_case, write_results

    results = []
    for block in ("b0", "b2"):
        arm = SimpleNamespace(name=f"{block}_sup", values={"block": block, "arm": "sup"})
        r = RunResult(SimpleNamespace(arm=arm, seed=0), ["block", "arm"])
        r.per_class, r.mean = {"LV": {"dice": 0.5}}, {"dice": 0.5}
        r.cases = [{"case": "c1", "class": "LV", "dice": 0.5}]
        results.append(r)
    write_results(results, ["block", "arm"], tmp_path / "results.csv")
    write_per_case(results, ["block", "arm"], tmp_path / "per_case.csv")
    for name in ("results.csv", "per_case.csv"):
        with open(tmp_path / name, newline="") as fh:
            header = next(csv.reader(fh))
            fh.seek(0)
            rows = list(csv.DictReader(fh))
        assert header.count("arm") == 1 and "arm_axis" in header, header
        assert {r["arm"] for r in rows} == {"b0_sup", "b2_sup"} and {r["arm_axis"] for r in rows} == {"sup"}
    from arco.study.report import _metrics_md

    e = {"n": 1, "mean": 0.5, "std": 0.0}
    arms = [{"arm": f"{b}_sup", "values": {"block": b, "arm": "sup"}, "n_runs": 1, "classes": {"LV": {"dice": e}},
             "mean": {"dice": e, "hd95": e, "asd": e}, "val_dice": e} for b in ("b0", "b2")]  # fmt: skip
    head = _metrics_md({"axes": ["block", "arm"], "arms": arms})[2]
    assert head.startswith("| arm | block | arm_axis | runs |"), head
