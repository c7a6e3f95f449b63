"""Study files: grid expansion, overrides, seeds, built-in studies, stage fingerprints and sharing (no training)."""

from __future__ import annotations

import dataclasses

import pytest

from _study import write_study
from arco._checks import ConfigError
from arco.config import build_config, to_dict
from arco.methods import list_methods
from arco.study import builtin_studies, expand, load_study
from arco.study.plan import fingerprints, make_plan, waves
from arco.study.spec import check_methods

GRID = {
    "sampler": {"ns": ["finetune.sampler=ns"], "sag": ["finetune.sampler=sag"]},
    "data.labeled": [1, 2, "all"],
}


def test_grid_expands_to_product_of_axes_and_seeds(tmp_path):
    spec = load_study(str(write_study(tmp_path / "s.yaml", tmp_path / "data", GRID, seeds=(3, 5))), ("model.dim=16",))
    arms = spec.arms()
    assert [a.name for a in arms] == [
        "ns_data.labeled1", "ns_data.labeled2", "ns_all", "sag_data.labeled1", "sag_data.labeled2", "sag_all",
    ]  # fmt: skip
    runs = expand(spec, tmp_path / "out")
    assert len(runs) == 12
    by_key = {r.key: r for r in runs}
    r = by_key["sag_data.labeled2/seed5"]
    assert r.config.engine.seed == 5 and r.config.data.labeled == "2" and r.config.model.dim == 16  # --set applies
    assert r.config.stage("finetune").params.sampler == "sag"
    assert r.config.stage("finetune").schedule.iterations == 3 and r.config.engine.progress is False
    assert r.folder == (tmp_path / "out" / "runs" / "sag_data.labeled2" / "seed5").resolve()
    assert by_key["ns_all/seed3"].config.data.labeled == "all"
    assert spec.reference(arms[4]) is None  # no compare_to


def test_methods_drop_stages_fast_and_reference(tmp_path):
    grid = {
        "method": {
            "sup": {"method": "supervised"},
            "ns": ["method=arco-ns"],
            "solo": {"method": "arco", "drop_stages": ["pretrain"], "set": ["finetune.iterations=5"]},
        }
    }
    path = write_study(tmp_path / "s.yaml", tmp_path / "d", grid, compare_to={"method": "sup"})
    spec = load_study(str(path))
    runs = {r.arm.name: r for r in expand(spec, tmp_path / "o")}
    # study-level finetune.* keys are left out of the supervised run, which has no such stage
    assert [s.name for s in runs["sup"].config.stages] == ["supervised"]
    assert runs["sup"].config.stages[0].schedule.iterations == 3
    assert runs["ns"].config.stage("finetune").params.sampler == "ns"
    solo = runs["solo"].config
    assert [s.name for s in solo.stages] == ["finetune"] and solo.stages[0].init == "none"
    assert solo.stages[0].schedule.iterations == 5
    assert spec.reference(spec.arms()[1]) == "sup" and spec.reference(spec.arms()[0]) is None
    fast = {r.arm.name: r for r in expand(spec, tmp_path / "o", fast=True)}
    assert fast["solo"].config.stages[0].schedule.iterations == 1  # 5 // 10, at least 1
    big = dataclasses.replace(solo, engine=dataclasses.replace(solo.engine, val_every=500, log_every=25))
    from arco.study.spec import shorten

    short = shorten(big, 10)
    assert (short.engine.val_every, short.engine.log_every) == (50, 2)


def test_an_axis_value_sets_a_stage_only_where_the_run_has_it(tmp_path):
    # arco-vs-supervised's mni152 value sets finetune.lambda_eqv for the ARCO arm next to a supervised arm.
    grid = {
        "dataset": {"p": [], "m": ["data.rotation=60", "finetune.lambda_eqv=0.5"]},
        "method": {"sup": {"method": "supervised"}, "arco": {"method": "arco"}},
    }
    runs = {
        r.arm.name: r.config
        for r in expand(load_study(str(write_study(tmp_path / "s.yaml", tmp_path / "d", grid))), tmp_path / "o")
    }
    assert runs["m_arco"].stage("finetune").params.lambda_eqv == 0.5 and runs["m_arco"].data.rotation == 60
    assert runs["m_sup"].data.rotation == 60 and [s.name for s in runs["m_sup"].stages] == ["supervised"]
    assert runs["p_arco"].stage("finetune").params.lambda_eqv == 0.0  # the demo's value, untouched
    typo = {"dataset": {"m": ["finetun.lambda_eqv=0"]}, "method": {"sup": {"method": "supervised"}}}
    with pytest.raises(ConfigError, match="'finetun.lambda_eqv=0' names a stage that no run of the study has"):
        expand(load_study(str(write_study(tmp_path / "t.yaml", tmp_path / "d", typo))), tmp_path / "o")


def test_bad_study_files_fail_early_with_clear_errors(tmp_path):
    path = write_study(tmp_path / "s.yaml", tmp_path / "d", {"m": {"a": {"method": "no-such-method"}}})
    with pytest.raises(ConfigError, match=r"not registered: no-such-method\..*Known methods: .*arco-sag"):
        check_methods(load_study(str(path)))
    path = write_study(tmp_path / "c.yaml", tmp_path / "d", GRID, compare_to={"sampler": "sgg"})
    with pytest.raises(ConfigError, match="compare_to sampler='sgg' is not a value"):
        load_study(str(path))
    with pytest.raises(ConfigError, match="built-in: .*table3"):
        load_study("tabel3")
    path = write_study(tmp_path / "b.yaml", tmp_path / "d", {"x": {"a": ["finetune.samplr=ns"]}})
    with pytest.raises(ConfigError, match="arm a: .*finetune.samplr"):
        expand(load_study(str(path)), tmp_path / "o")


@pytest.mark.parametrize("name", sorted(builtin_studies()))
def test_builtin_studies_expand(tmp_path, name):
    spec = load_study(name)
    assert spec.description and spec.seeds
    missing = sorted(
        {a.method for v in spec.axes.values() for a in v.values() if a.method and a.method not in list_methods()}
    )
    if missing:  # baselines not merged yet: the early error names exactly those
        with pytest.raises(ConfigError, match="not registered: " + ", ".join(missing)):
            check_methods(spec)
        return
    check_methods(spec)
    runs = expand(spec, tmp_path / "out", fast=True)
    assert len(runs) == len(spec.arms()) * len(spec.seeds)


def test_arco_vs_supervised_reports_the_fully_labeled_ceiling(tmp_path):
    # The `full` arm is the supervised baseline on every training subject (UNet-F), compared to the one-subject
    # baseline on each dataset; the other arms keep the demo's one labeled subject.
    spec = load_study("arco-vs-supervised")
    runs = {r.arm.name: r.config for r in expand(spec, tmp_path / "out") if r.seed == spec.seeds[0]}
    for dataset in ("phantom2d", "mni152"):
        full, sup, arco = (runs[f"{dataset}_{m}"] for m in ("full", "supervised", "arco"))
        assert full.data.labeled == "all" and sup.data.labeled == arco.data.labeled == "1"
        assert [s.method for s in full.stages] == [s.method for s in sup.stages] == ["supervised"]
        assert full.stages[0].schedule == sup.stages[0].schedule and full.data.dataset == sup.data.dataset
    assert {a.name: spec.reference(a) for a in spec.arms()}["mni152_full"] == "mni152_supervised"


def test_config_round_trip_through_worker_spec(tmp_path):
    spec = load_study(str(write_study(tmp_path / "s.yaml", tmp_path / "d", GRID)))
    cfg = expand(spec, tmp_path / "o")[0].config
    assert build_config(to_dict(cfg)) == cfg


def test_fingerprints_share_stage1_between_stage2_arms(tmp_path):
    spec = load_study(str(write_study(tmp_path / "s.yaml", tmp_path / "d", {"sampler": GRID["sampler"]}, seeds=(0, 1))))
    runs = {r.key: r for r in expand(spec, tmp_path / "o")}
    ns0, sag0, ns1 = (fingerprints(runs[k].config) for k in ("ns/seed0", "sag/seed0", "ns/seed1"))
    assert ns0[0] == sag0[0] and ns0[1] != sag0[1]  # stage 1 shared, stage 2 not
    assert ns0[0] != ns1[0]  # another seed is another stage 1
    cfg = runs["ns/seed0"].config
    threads = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, threads=7, progress=True))
    assert fingerprints(threads) == ns0  # thread count and progress bar do not change what is trained
    data = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment=False))
    assert fingerprints(data)[0] != ns0[0] and fingerprints(data)[1] != ns0[1]
    best = dataclasses.replace(cfg, stages=(cfg.stages[0], dataclasses.replace(cfg.stages[1], init_checkpoint="best")))
    assert fingerprints(best)[0] == ns0[0] and fingerprints(best)[1] != ns0[1]  # stage 2 starts from another file
    plan = make_plan(list(runs.values()), tmp_path / "o", link=False)
    assert len(plan.shared()) == 2 and len(plan.stages) == 6  # 2 shared stage 1 + 4 stage 2
    assert {len(t.runs) for t in plan.shared()} == {2}
    levels = waves(plan.jobs)
    assert [len(w) for w in levels] == [2, 4]
    assert all(j.needs for j in levels[1]) and not any(j.needs for j in levels[0])


def test_cli_bad_study_exits_2_without_traceback(tmp_path):
    import subprocess
    import sys

    path = write_study(tmp_path / "s.yaml", tmp_path / "d", {"m": {"a": {"method": "mean-teacherr"}}})
    proc = subprocess.run(
        [sys.executable, "-m", "arco", "study", str(path), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not registered: mean-teacherr" in " ".join(proc.stderr.split())
    assert not (tmp_path / "o" / "runs").exists()  # nothing was planned


PAPER_TABLES = ("table1", "table2", "table3", "table4", "fig5")


@pytest.mark.parametrize("name", PAPER_TABLES)
def test_paper_tables_tune_every_arm_with_equal_budgets_on_the_phantoms_choices(tmp_path, name):
    from arco.study.tune import tuning_arms

    spec = load_study(name)
    assert spec.seeds == (0, 1, 2, 3, 4) and spec.base == "demo" and spec.tune is not None
    assert set(tuning_arms(spec)) == {a.name for a in spec.arms()}  # every arm takes a tuned setting
    assert len({len(b) for b in spec.tune.grid.values()}) == 1 and spec.tune.size == 4
    assert {"data.rotation=20", "finetune.lambda_eqv=1"} <= set(spec.overrides)
    for run in expand(spec, tmp_path / "o"):
        stages = {s.name: s for s in run.config.stages}
        assert run.config.data.rotation == 20
        assert "finetune" not in stages or stages["finetune"].params.lambda_eqv == 1
        total = sum(s.schedule.iterations for s in run.config.stages)
        assert total == 1800  # the demo schedule, the same length for every method


def test_table1_arms_and_references():
    from arco.study.tune import tuning_arms

    spec = load_study("table1")
    assert list(spec.axes["method"]) == [
        "supervised", "mean-teacher", "ua-mt", "cps", "unimatch", "bcp", "arco-ns", "arco-sg", "arco-sag", "full",
    ]  # fmt: skip
    assert [r for r in spec.references] == [{"method": "supervised"}, {"method": "arco-ns"}]
    targets = {n: a.name for n, (a, _) in tuning_arms(spec).items()}
    assert targets["labeled7_cps"] == "labeled1_cps" and targets["labeled3_full"] == "labeled1_full"
    assert spec.tune.grid["supervised"][0].overrides == ("schedule.lr=0.01",)
    assert spec.tune.grid["arco-sg"][3].overrides == ("pretrain.lr=0.03", "finetune.lr=0.03",
                                                      "finetune.lambda_contrast=1")  # fmt: skip


def test_the_ablation_tables_and_fig5_are_table1s_arco_runs(tmp_path):
    """With one data root, table2/table4's `full`, table3's and fig5's arms (and their tuning runs) are table1's
    ARCO runs at 1 labeled subject: `--reuse` of table1 links them instead of training them again."""
    from arco.study.spec import arm_runs

    root = [f"data.root={tmp_path / 'phantom'}"]
    t1 = load_study("table1", root)
    arms1 = {a.values["method"]: a for a in t1.arms() if a.values["labeled"] == "1"}

    def fps(spec, arm, setting):
        (run,) = arm_runs(spec, arm, tmp_path / spec.name, [0], lambda s: tmp_path, setting.overrides)
        return fingerprints(run.config)

    pairs = [("table3", "ns", "arco-ns"), ("table3", "sag", "arco-sag"), ("fig5", "sg", "arco-sg"),
             ("table2", "full", "arco-sg"), ("table4", "full", "arco-sg")]  # fmt: skip
    for name, value, method in pairs:
        spec = load_study(name, root)
        arm = next(a for a in spec.arms() if a.name == value)
        for setting, same in zip(spec.tune.grid[value], t1.tune.grid[method]):
            assert setting == same
            assert fps(spec, arm, setting) == fps(t1, arms1[method], same), (name, value, setting.name)


def test_dry_run_prints_the_stages_and_the_estimated_time(tmp_path, capsys):
    from arco.cli import main

    assert main(["study", "table3", "--out", str(tmp_path / "t3"), "--dry-run", "--jobs", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "tuning phase 12 runs (3 budgets x 4 settings, seed 0" in out
    assert "15 runs (3 arms x 5 seeds), 30 stages (18 shared, 0 reused from --reuse), 30 to train" in out
    assert (
        "estimated CPU time (one thread per run, arco.study.cost): 2.1 h" in out and "of which the tuning phase" in out
    )
    assert "estimated wall time with --jobs 2 on" in out
    assert not (tmp_path / "t3").exists()  # nothing planned on disk
