"""The results page and the README's headline block (``arco study report``), from study folders with fixed
numbers."""

from __future__ import annotations

import json
import os

import pytest

from _study import write_study
from arco.cli import main
from arco.study import expand, load_study
from arco.study.collect import RunResult
from arco.study.figures import write_figures
from arco.study.provenance import training_seconds
from arco.study.report import provenance_line, summarise, write_report
from arco.study.results import HEADLINE_END, HEADLINE_START, reading

MACHINE = {"cpu": "Test CPU 9000", "cores": 2, "usable_cores": 2, "torch": "2.13.0+cpu", "load_average": [0.1]}


def _study(tmp_path, name, offset, wall):
    """A finished study folder ``name`` with two methods over two seeds; ``semi`` is ``offset`` above ``sup`` on
    average over the test cases (plus noise of mean 0, so the bootstrap has spread)."""
    grid = {"method": {"sup": {"method": "supervised"}, "semi": {"method": "mean-teacher"}}}
    spec = load_study(str(write_study(tmp_path / f"{name}.yaml", tmp_path / "d", grid, seeds=(0, 1),
                                      compare_to={"method": "sup"})))  # fmt: skip
    results = []
    for run in expand(spec, tmp_path / name):
        base = 0.6 + 0.01 * run.seed + (offset if run.arm.name == "semi" else 0.0)
        r = RunResult(run, ["method"])
        noise = (0.004, -0.004, 0.002, -0.002) if run.arm.name == "semi" else (0.0,) * 4
        dice = [base + n for n in noise]
        r.cases = [{"case": f"c{k}", "class": "fg", "dice": d} for k, d in enumerate(dice)]
        r.last_cases = [{**c, "dice": c["dice"] - 0.02} for c in r.cases]
        mean = sum(dice) / 4
        r.per_class, r.mean = {"fg": {"dice": mean, "hd95": 1.0, "asd": 0.5}}, {"dice": mean, "jaccard": 0.5,
                                                                              "hd95": 1.0, "asd": 0.5}  # fmt: skip
        r.last_per_class, r.last_mean = {"fg": {"dice": mean - 0.02}}, {"dice": mean - 0.02}
        r.val_dice, r.iterations, r.best_iteration, r.train_seconds = 0.5, 100, 60, 1.0
        r.curves = [{"iteration": i, "val_dice": 0.1 * i} for i in (1, 2, 3)]
        r.stage_ends = [100]
        results.append(r)
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    s = summarise(spec, results, planned=4, failed=[], fast=False)
    s.update(wall_seconds=wall, wall_total_seconds=wall, commit="abc1234", machine=MACHINE, jobs=2,
             history=[{"jobs": 2, "wall_seconds": wall, "set": ["data.root=runs/phantom"], "seeds": None}])  # fmt: skip
    write_report(s, out, write_figures(spec, results, out), results)
    return out


def test_page_has_every_study_and_the_readme_block_is_replaced_and_nothing_else(tmp_path):
    alpha, beta = _study(tmp_path, "alpha", 0.1, 7260.0), _study(tmp_path, "beta", 0.0, 95.0)
    docs = tmp_path / "docs"
    docs.mkdir()
    page, readme = docs / "results.md", tmp_path / "README.md"
    before, after = "# arco\n\nIntro, with a table:\n\n| a |\n|---|\n\n", "\n\n## Methods\n\nunchanged\n"
    readme.write_text(f"{before}{HEADLINE_START}\nhand-copied 0.1234\n{HEADLINE_END}{after}")
    argv = [
        "study",
        "report",
        str(alpha),
        str(beta),
        "--out",
        str(page),
        "--readme",
        str(readme),
        "--headline",
        "alpha",
    ]
    assert main(argv) == 0

    text = page.read_text()
    assert text.index("## alpha") < text.index("## beta")
    for name in ("alpha", "beta"):  # every study's tables as study.md prints them
        section = text.split(f"## {name}")[1].split("\n## ")[0]
        assert "### Test metrics (mean ± std over seeds)" in section and "| semi | sup |" in section
        assert "### Where validation Dice peaked" in section and "### Paired differences" in section
        assert f"`arco study {name} --out {name} --jobs 2 --set data.root=runs/phantom`" in section
        assert "commit `abc1234`; Test CPU 9000, 2 cores, torch 2.13.0+cpu" in section
    assert "wall time 2.0 h (7260 s)" in text and "wall time 95 s" in text
    assert "above the reference beyond the interval: semi (+0.1" in text.split("## beta")[0]
    assert "above the reference beyond the interval: none" in text.split("## beta")[1]
    assert "interval includes 0: semi" in text.split("## beta")[1]
    figures = docs / "figures" / "results"
    assert {p.name for p in figures.iterdir()} >= {"alpha-dice_per_arm.png", "beta-curves.png"}
    assert "![alpha: alpha-dice_per_arm](figures/results/alpha-dice_per_arm.png)" in text

    new = readme.read_text()
    assert new.startswith(before + HEADLINE_START) and new.endswith(HEADLINE_END + after)
    block = new[len(before) + len(HEADLINE_START) : -len(HEADLINE_END + after)]
    assert "0.1234" not in block and "| method | alpha |" in block and "| semi | 0.7" in block
    assert "](docs/results.md)" in block and "(docs/figures/results/alpha-dice_per_arm.png)" in block
    assert "beta" not in block and os.path.isfile(tmp_path / "docs/figures/results/alpha-dice_per_arm.png")
    assert main(argv) == 0 and readme.read_text() == new  # a second run changes nothing


def test_reading_says_only_what_the_intervals_say():
    rows = [
        {"arm": "a", "compare_to": "m = r", "mean": 0.1, "ci_low": 0.05, "ci_high": 0.15, "n_pairs": 9},
        {"arm": "b", "compare_to": "m = r", "mean": -0.1, "ci_low": -0.15, "ci_high": -0.05, "n_pairs": 9},
        {"arm": "c", "compare_to": "m = r", "mean": 0.01, "ci_low": -0.01, "ci_high": 0.03, "n_pairs": 9},
        {"arm": "d", "compare_to": "m = r", "mean": 0.01, "ci_low": None, "ci_high": None, "n_pairs": 1},
    ]
    s = {"comparisons": rows, "convergence": [{"arm": "a", "late": True}, {"arm": "c", "late": False}],
         "arms": [], "runs": {"planned": 4, "failed": []}, "fast": True}  # fmt: skip
    lines = reading(s)
    assert lines[0].startswith("Fast smoke run")
    assert (
        "above the reference beyond the interval: a (+0.1000 [+0.0500, +0.1500]); below it beyond the interval: b "
        "(-0.1000 [-0.1500, -0.0500]); interval includes 0: c (+0.0100 [-0.0100, +0.0300]); fewer than two pairs: d"
    ) in lines[1]
    assert (
        lines[2] == "Median peak of validation Dice in the last 10 % of the schedule (may need a longer schedule): a."
    )


@pytest.mark.parametrize(
    ("readme", "extra", "match"),
    [
        ("no markers\n", ["--headline", "alpha"], "must hold"),
        (f"{HEADLINE_END}\n{HEADLINE_START}\n", ["--headline", "alpha"], "comes before"),
        (f"{HEADLINE_START}\n{HEADLINE_END}\n", ["--headline", "gamma"], "none of the studies"),
        (f"{HEADLINE_START}\n{HEADLINE_END}\n", [], "go together"),
    ],
)
def test_report_errors(tmp_path, capsys, readme, extra, match):
    alpha = _study(tmp_path, "alpha", 0.1, 10.0)
    (tmp_path / "README.md").write_text(readme)
    argv = ["study", "report", str(alpha), "--out", str(tmp_path / "r.md"), "--readme", str(tmp_path / "README.md")]
    assert main([*argv, *extra]) == 2
    assert match in " ".join(capsys.readouterr().err.split())
    assert (tmp_path / "README.md").read_text() == readme
    assert main(["study", "report", str(tmp_path), "--out", str(tmp_path / "r.md")]) == 2
    assert "holds no study.json" in capsys.readouterr().err


def _stage(folder, seconds, stage="finetune"):
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"stage": stage, "wall_seconds": seconds}))


def test_training_time_counts_each_own_stage_once_and_the_report_says_it(tmp_path):
    """A study written before its history was kept shows the stages' recorded training time beside the wall time:
    a stage shared by two runs counts once, a stage linked from another study (--reuse) and evaluation folders not
    at all."""
    out, other = tmp_path / "study", tmp_path / "other"
    _stage(out / "shared" / "abc" / "pretrain", 100.0, "pretrain")
    _stage(other / "runs" / "sup" / "seed0" / "supervised", 1000.0, "supervised")
    for arm, seconds in (("sg", 10.0), ("sag", 20.0)):
        run = out / "runs" / arm / "seed0"
        _stage(run / "finetune", seconds)
        (run / "pretrain").symlink_to(out / "shared" / "abc" / "pretrain")
        (run / "evaluation").mkdir()
        (run / "evaluation" / "summary.json").write_text(json.dumps({"mean": {"dice": 0.5}}))
    (out / "runs" / "sup" / "seed0").mkdir(parents=True)
    (out / "runs" / "sup" / "seed0" / "supervised").symlink_to(other / "runs" / "sup" / "seed0" / "supervised")
    assert training_seconds(out) == (130.0, 3)

    s = {"wall_total_seconds": 32.0, "history": [{}], "jobs": 2, "commit": "abc1234", "machine": MACHINE,
         "train_seconds": 16556.0, "train_stages": 35}  # fmt: skip
    assert provenance_line(s).endswith(
        "wall time 32 s (1 recorded invocation, `--jobs 2`); training time recorded by its 35 stages, summed: "
        "4.6 h (16556 s)."
    )


def test_results_page_shows_the_study_variance_table(tmp_path):
    """A study folder with ``variance.csv`` (``arco study variance``) gets its table of ratios to NS on the page."""
    alpha = _study(tmp_path, "alpha", 0.1, 10.0)
    rows = [("semi", "ns", 1.0, 1.0), ("semi", "sg", 0.8123, 0.7456), ("semi", "sag", 0.6, 0.9001)]
    (alpha / "variance.csv").write_text(
        "arm,seed,sampler,draws,batches,loss_var_ratio,grad_var_ratio,loss_var,grad_var\n"
        + "".join(f"{a},0,{s},64,4,{lv},{gv},0.1,0.2\n" for a, s, lv, gv in rows)
    )
    page = tmp_path / "results.md"
    assert main(["study", "report", str(alpha), "--out", str(page)]) == 0
    text = page.read_text()
    assert "### Sampler variance on trained runs" in text and "at seed 0: 64 sampler draws on each of 4" in text
    assert "| arm | Var L / NS: ns | Var L / NS: sg | Var L / NS: sag | Var grad / NS: ns |" in text
    assert "| semi | 1.000 | 0.812 | 0.600 | 1.000 | 0.746 | 0.900 |" in text


def test_study_variance_errors(tmp_path, capsys):
    assert main(["study", "variance"]) == 2
    assert "needs one study folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["study", "variance", str(tmp_path / "empty")]) == 2
    assert "holds no study runs" in " ".join(capsys.readouterr().err.split())
    alpha = _study(tmp_path, "alpha", 0.1, 10.0)  # runs without any stage 2
    assert main(["study", "variance", str(alpha), "--draws", "1"]) == 2
    assert "--draws must be >= 2" in capsys.readouterr().err
    assert main(["study", "variance", str(alpha)]) == 2
    assert "no arm of" in " ".join(capsys.readouterr().err.split()) and not (alpha / "variance.csv").exists()
    assert main(["study", "variance", str(alpha), "--arms", "no-such-*"]) == 2
    assert "--arms 'no-such-*' matches no arm" in " ".join(capsys.readouterr().err.split())
