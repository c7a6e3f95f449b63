"""The tuning phase of a study (``tune:``): budgets, which runs tune which arms, the choice by validation only, the
frozen setting in every seed and labeled count, and what the report says (no training here)."""

from __future__ import annotations

import json

import pytest

from _study import write_study
from arco._checks import ConfigError
from arco.study import expand, load_study
from arco.study.budget import parse_tune
from arco.study.plan import fingerprints, make_plan
from arco.study.report import summarise, write_report
from arco.study.tune import assign, choose, tuning_arms, tuning_runs, tuning_summary

GRID = {
    "labeled": {"1": ["data.labeled=1"], "2": ["data.labeled=2"]},
    "method": {"sup": {"method": "supervised"}, "mt": {"method": "mean-teacher"}},
}
TUNE = {
    "seed": 0,
    "where": {"labeled": "1"},
    "grid": {
        "sup": {"schedule.lr": [0.01, 0.03]},
        "mt": {"schedule.lr": [0.01], "mean-teacher.consistency": [0.1, 1]},
    },
}


def _spec(tmp_path, grid=GRID, tune=TUNE, **keys):
    return load_study(str(write_study(tmp_path / "s.yaml", tmp_path / "d", grid, seeds=(0, 1), tune=tune, **keys)))


@pytest.mark.parametrize(
    ("grid", "names", "overrides"),
    [
        ({"schedule.lr": [0.01, 0.03]}, ["lr0.01", "lr0.03"], [("schedule.lr=0.01",), ("schedule.lr=0.03",)]),
        (
            {"pretrain.lr,finetune.lr": [0.02], "finetune.lambda_contrast": [0.01, 0.1]},
            ["lr0.02_lambda_contrast0.01", "lr0.02_lambda_contrast0.1"],
            [
                ("pretrain.lr=0.02", "finetune.lr=0.02", "finetune.lambda_contrast=0.01"),
                ("pretrain.lr=0.02", "finetune.lr=0.02", "finetune.lambda_contrast=0.1"),
            ],
        ),
        ({"pretrain.lr": [1], "finetune.lr": [2]}, ["pretrain.lr1_finetune.lr2"], [("pretrain.lr=1", "finetune.lr=2")]),
    ],
)
def test_budget_is_the_product_of_its_values(grid, names, overrides):
    tune = parse_tune({"grid": {"a": grid}}, 7, "here")
    assert tune.seed == 7 and tune.where == {}  # the study's first seed by default
    settings = tune.grid["a"]
    assert [s.name for s in settings] == names and [s.overrides for s in settings] == overrides


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"grid": {"a": {"schedule.lr": [1, 2]}, "b": {"schedule.lr": [1]}}}, "same tuning budget.*a 2, b 1"),
        ({"grid": {"a": {"lr": [1]}}}, "must be a config key"),
        ({"grid": {"a": {"schedule.lr": []}}}, "non-empty list"),
        ({"grid": {"a": {"schedule.lr": [1, 1]}}}, "lists a value twice"),
        ({"grid": {}}, "tune.grid must map"),
        ({"grid": {"a": {"schedule.lr": [1]}}, "seeds": 0}, "unknown key 'seeds'"),
        ({"grid": {"a": {"schedule.lr": [1]}}, "share": {"b": ["c"]}}, "share names 'b'"),
        ({"grid": {"a": {"schedule.lr": [1]}}, "seed": "0"}, "tune.seed must be an integer"),
    ],
)
def test_bad_tune_sections_fail_with_the_reason(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_tune(raw, 0, "here")


@pytest.mark.parametrize(
    ("tune", "match"),
    [
        ({**TUNE, "where": {"labeld": "1"}}, "tune.where axis 'labeld' is not a grid axis"),
        ({**TUNE, "where": {"labeled": "3"}}, "tune.where labeled='3' is not a value"),
        ({**TUNE, "grid": {"sup": {"schedule.lr": [1]}, "mtt": {"schedule.lr": [1]}}}, "names 'mtt'.*did you mean"),
        ({**TUNE, "grid": {"sup": {"schedule.lr": [1]}, "labeled1_sup": {"schedule.lr": [1]}}}, "two tuning budgets"),
        ({**TUNE, "share": {"sup": ["1"]}}, "must be a value of the same axis"),
    ],
)
def test_tune_names_must_fit_the_grid(tmp_path, tune, match):
    with pytest.raises(ConfigError, match=match):
        _spec(tmp_path, tune=tune)


def test_tuning_runs_at_one_seed_and_count_and_which_arms_they_tune(tmp_path):
    spec = _spec(tmp_path)
    targets = {name: (arm.name, key) for name, (arm, key) in tuning_arms(spec).items()}
    assert targets == {
        "labeled1_sup": ("labeled1_sup", "sup"),
        "labeled2_sup": ("labeled1_sup", "sup"),  # tuned at labeled 1, frozen for labeled 2
        "labeled1_mt": ("labeled1_mt", "mt"),
        "labeled2_mt": ("labeled1_mt", "mt"),
    }
    runs = tuning_runs(spec, tmp_path / "o")
    assert [r.key for r in runs] == [
        "tune/labeled1_sup/lr0.01/seed0", "tune/labeled1_sup/lr0.03/seed0",
        "tune/labeled1_mt/lr0.01_consistency0.1/seed0", "tune/labeled1_mt/lr0.01_consistency1/seed0",
    ]  # fmt: skip
    assert all(r.seed == 0 and r.config.data.labeled == "1" for r in runs)
    assert runs[1].folder == (tmp_path / "o" / "tune" / "labeled1_sup" / "lr0.03" / "seed0").resolve()
    assert runs[1].config.stages[0].schedule.lr == 0.03 and runs[3].config.stages[0].params.consistency == 1
    bad = {**TUNE, "grid": {"sup": {"finetune.lr": [1, 2]}, "mt": {"schedule.lr": [1, 2]}}}
    with pytest.raises(ConfigError, match="sets stage 'finetune', which the runs of arm labeled1_sup do not have"):
        tuning_runs(_spec(tmp_path, tune=bad), tmp_path / "o")


def _finish(run, val, best_iteration=2, test=None):
    """Write what a finished run folder holds for the choice: each stage's summary.json (validation), and, to catch
    a choice that reads it, a test evaluation with the opposite ranking."""
    for stage in run.config.stages:
        folder = run.folder / stage.name
        folder.mkdir(parents=True, exist_ok=True)
        summary = {"finished": True, "iterations": 3, "best_val_dice": val, "best_iteration": best_iteration}
        (folder / "summary.json").write_text(json.dumps(summary))
    if test is not None:
        (run.folder / "evaluation").mkdir(parents=True, exist_ok=True)
        (run.folder / "evaluation" / "summary.json").write_text(json.dumps({"mean": {"dice": test}}))


def test_the_choice_reads_validation_only_and_is_frozen_for_every_seed_and_count(tmp_path):
    spec = _spec(tmp_path)
    runs = tuning_runs(spec, tmp_path / "o")
    # sup: lr 0.03 wins on validation, lr 0.01 on test; mt: consistency 0.1 wins on validation, 1 on test
    for run, val, test in zip(runs, (0.50, 0.60, 0.70, 0.40), (0.9, 0.1, 0.2, 0.95)):
        _finish(run, val, test=test)
    choices = choose(spec, runs)
    assert [(c["arm"], c["chosen"], c["val_dice"]) for c in choices] == [
        ("labeled1_sup", "lr0.03", 0.60), ("labeled1_mt", "lr0.01_consistency0.1", 0.70),
    ]  # fmt: skip
    tuned, skipped = assign(spec, choices)
    assert not skipped and tuned["labeled2_sup"] == ("schedule.lr=0.03",)
    main = expand(spec, tmp_path / "o", tuned=tuned)
    assert len(main) == 8
    for r in main:
        stage = r.config.stages[0]
        if r.arm.values["method"] == "sup":
            assert stage.schedule.lr == 0.03
        else:
            assert stage.schedule.lr == 0.01 and stage.params.consistency == 0.1
    # the main run at the tuning seed and count is the chosen tuning run: the same stage, trained once
    plan = make_plan([*runs, *main], tmp_path / "o", link=False, tuning={r.key for r in runs})
    by_key = {r.key: r for r in [*runs, *main]}
    assert fingerprints(by_key["labeled1_sup/seed0"].config) == fingerprints(
        by_key["tune/labeled1_sup/lr0.03/seed0"].config
    )
    task = plan.stages[fingerprints(by_key["labeled1_sup/seed0"].config)[0]]
    assert task.shared and set(task.runs) == {"tune/labeled1_sup/lr0.03/seed0", "labeled1_sup/seed0"}
    assert not any(j.startswith("tune") for j in plan.jobs)  # tuning runs are never scored on the test split
    assert plan.jobs["labeled1_sup-seed0"].tasks == [] and f"shared-{task.fingerprint}" in plan.jobs


def test_a_budget_with_an_unfinished_run_chooses_nothing_and_its_arms_are_not_run(tmp_path):
    spec = _spec(tmp_path)
    runs = tuning_runs(spec, tmp_path / "o")
    for run in runs[:3]:
        _finish(run, 0.5)
    choices = choose(spec, runs)
    assert choices[0]["chosen"] == "lr0.01"  # a tie: the first in grid order
    assert choices[1]["chosen"] is None and "lr0.01_consistency1 of labeled1_mt did not finish" in choices[1]["reason"]
    tuned, skipped = assign(spec, choices)
    assert set(tuned) == {"labeled1_sup", "labeled2_sup"} and set(skipped) == {"labeled1_mt", "labeled2_mt"}
    assert {r.arm.name for r in expand(spec, tmp_path / "o", tuned=tuned, skip=skipped)} == set(tuned)


def test_share_gives_an_ablation_the_tuned_choice_but_keeps_its_own_setting(tmp_path):
    grid = {"ablation": {"full": [], "no-contrast": ["finetune.lambda_contrast=0"]}}
    tune = {"grid": {"full": {"finetune.lr": [0.02, 0.03], "finetune.lambda_contrast": [0.01, 0.1]}},
            "share": {"full": ["no-contrast"]}}  # fmt: skip
    spec = _spec(tmp_path, grid=grid, tune=tune, method="arco")
    assert {n: a.name for n, (a, _) in tuning_arms(spec).items()} == {"full": "full", "no-contrast": "full"}
    runs = tuning_runs(spec, tmp_path / "o")
    assert len(runs) == 4
    for run, val in zip(runs, (0.1, 0.2, 0.4, 0.3)):
        _finish(run, val)
    tuned, _ = assign(spec, choose(spec, runs))
    main = {r.key: r.config.stage("finetune") for r in expand(spec, tmp_path / "o", tuned=tuned)}
    assert main["full/seed1"].schedule.lr == 0.03 and main["full/seed1"].params.lambda_contrast == 0.01
    assert main["no-contrast/seed1"].schedule.lr == 0.03 and main["no-contrast/seed1"].params.lambda_contrast == 0


def test_the_report_shows_the_rule_the_choices_and_every_setting(tmp_path):
    spec = _spec(tmp_path)
    runs = tuning_runs(spec, tmp_path / "o")
    for run, val in zip(runs, (0.50, 0.60, 0.70, 0.40)):
        _finish(run, val, best_iteration=3)
    s = summarise(spec, [], planned=8, failed=[], fast=False)
    s["tuning"] = tuning_summary(spec, choose(spec, runs))
    budgets = {"sup": {"schedule.lr": ["0.01", "0.03"]},
               "mt": {"schedule.lr": ["0.01"], "mean-teacher.consistency": ["0.1", "1"]}}  # fmt: skip
    assert s["tuning"]["budgets"] == budgets
    write_report(s, tmp_path, [])
    md = (tmp_path / "study.md").read_text()
    assert "## Tuning on validation" in md and "the test split was not read" in md
    assert "| labeled1_sup | sup | schedule.lr=0.03 | 0.6000 | labeled1_sup, labeled2_sup |" in md
    assert "| labeled1_mt | schedule.lr=0.01, mean-teacher.consistency=1 | 0.4000 | 3 |" in md
    assert "| labeled1_sup | schedule.lr=0.03 | **0.6000** | 3 |" in md
    html = (tmp_path / "study.html").read_text()
    assert "Tuning on validation" in html and "schedule.lr=0.01, mean-teacher.consistency=0.1" in html
    assert (
        json.loads((tmp_path / "study.json").read_text())["tuning"]["choices"][1]["chosen"] == "lr0.01_consistency0.1"
    )


def test_each_dataset_keeps_its_own_choice(tmp_path):
    grid = {"dataset": {"phantom": [], "other": ["data.subjects=7"]}, "method": {"sup": {"method": "supervised"}}}
    tune = {"grid": {"sup": {"schedule.lr": [0.01, 0.03]}}}
    spec = _spec(tmp_path, grid=grid, tune=tune)
    assert {n: a.name for n, (a, _) in tuning_arms(spec).items()} == {"phantom_sup": "phantom_sup",
                                                                      "other_sup": "other_sup"}  # fmt: skip
    runs = tuning_runs(spec, tmp_path / "o")
    assert [r.key for r in runs] == ["tune/phantom_sup/lr0.01/seed0", "tune/phantom_sup/lr0.03/seed0",
                                     "tune/other_sup/lr0.01/seed0", "tune/other_sup/lr0.03/seed0"]  # fmt: skip
    for run, val in zip(runs, (0.2, 0.1, 0.1, 0.2)):
        _finish(run, val)
    tuned, _ = assign(spec, choose(spec, runs))
    assert tuned == {"phantom_sup": ("schedule.lr=0.01",), "other_sup": ("schedule.lr=0.03",)}
