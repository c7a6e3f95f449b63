"""`arco variance --checkpoint`: L_contrast's spread over sampler draws on a trained (tiny) ARCO run."""

from __future__ import annotations

import csv
import dataclasses
import math

import pytest
import torch

from _study import TINY_SET
from _tiny import make_phantom
from arco._checks import CheckpointError
from arco.cli import main
from arco.config import load_config
from arco.contrast_variance import COLUMNS, load_run, measure
from arco.pipeline import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cv")
    sets = [f"data.root={root / 'data'}", *TINY_SET, "engine.progress=false"]
    make_phantom("demo", sets)
    # delta_p 0: every candidate may be an anchor (three iterations leave the teacher unsure of every pixel)
    cfg = load_config("demo", [*sets, "finetune.delta_p=0"])
    train(cfg, root / "run")
    batch = load_config("demo", [f"data.root={root / 'data'}", *TINY_SET, "engine.progress=false",
                                 "finetune.contrast=batch"])  # fmt: skip
    train(batch, root / "batch", only=["finetune"], init_from=root / "run" / "pretrain" / "checkpoints" / "best.pt")
    return root


def test_reference_loss_varies_anchors_and_negatives_and_leaves_the_banks(run_dir):
    run = load_run(run_dir / "run" / "finetune")
    assert run.method.cfg.contrast == "reference" and run.checkpoint.name == "last.pt"
    banks = {k: v.clone() for k, v in run.method.contrast.banks.state_dict().items()}
    rows = measure(run, ("ns", "sg", "sag"), draws=4, batches=1, seed=0)
    assert [r["sampler"] for r in rows] == ["ns", "sg", "sag"] and rows[0]["grad_var_ratio"] == 1.0
    for r in rows:
        assert r["loss_var"] > 0 and r["grad_var"] > 0 and math.isfinite(r["loss_mean"]), r
    for k, v in run.method.contrast.banks.state_dict().items():
        assert torch.equal(v, banks[k]), f"measuring moved the bank's {k}"
    with pytest.raises(ValueError, match="pixel-list samplers"):
        measure(run, ("ns", "sg-ref"), draws=2, batches=1)


def test_variance_over_draws_of_a_trained_run(run_dir, tmp_path):
    run = load_run(run_dir / "batch" / "finetune")
    rows = measure(run, ("ns", "sg", "sag", "sg-ref", "sag-ref"), draws=4, batches=1, seed=0)
    assert [r["sampler"] for r in rows] == ["ns", "sg", "sag", "sg-ref", "sag-ref"] and list(rows[0]) == list(COLUMNS)
    assert rows[0]["loss_var_ratio"] == 1.0 and rows[0]["grad_var_ratio"] == 1.0
    for r in rows:
        assert r["loss_var"] > 0 and r["grad_var"] > 0 and math.isfinite(r["loss_mean"]), r
        assert r["grad_var_ratio"] == pytest.approx(r["grad_var"] / rows[0]["grad_var"])
    assert measure(run, ("ns", "sg"), draws=4, batches=1, seed=0) == rows[:2]  # deterministic given the seed

    # With more queries than pixels every paper sampler draws every candidate: the sampler is then the only source of
    # randomness left and there is none (the negatives use one fixed generator), so the spread vanishes.
    run.method.cfg = dataclasses.replace(run.method.cfg, num_queries=2 * 32 * 32)
    one = dataclasses.replace(run.stage.schedule, batch_labeled=1, batch_unlabeled=1)
    run.stage = dataclasses.replace(run.stage, schedule=one)
    full = measure(run, ("ns", "sg"), draws=3, batches=1, seed=0)
    for r in full:
        assert r["loss_var"] < 1e-12 and r["grad_var"] < 1e-12 * max(1.0, r["grad_norm"] ** 2), r


def test_cli_writes_table_and_plot_and_rejects_other_methods(run_dir, tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["variance", "--checkpoint", str(run_dir / "run" / "finetune"), "--draws", "3", "--batches", "1",
                 "--samplers", "ns", "sg", "--no-progress", "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "Var grad" in text and "sg " in text
    with open(out / "contrast_variance.csv", newline="") as fh:
        assert [r["sampler"] for r in csv.DictReader(fh)] == ["ns", "sg"]
    assert (out / "contrast_variance.png").stat().st_size > 1000
    with pytest.raises(CheckpointError, match="no pixel contrastive loss"):
        load_run(run_dir / "run" / "pretrain")
    assert main(["variance", "--checkpoint", str(run_dir / "run" / "finetune"), "--image", "x.png"]) == 2


@pytest.mark.parametrize("framework", ["moco", "byol"])
def test_framework_runs_measure_their_own_objective(run_dir, tmp_path, framework):
    # A pixel-level framework's run (MoCo: queue draws; BYOL: its predictor) measures that framework's objective.
    cfg = load_config("demo", [f"data.root={run_dir / 'data'}", *TINY_SET, "engine.progress=false",
                               f"finetune.framework={framework}", "finetune.framework_queue=64"])  # fmt: skip
    init = run_dir / "run" / "pretrain" / "checkpoints" / "best.pt"
    train(cfg, tmp_path / framework, only=["finetune"], init_from=init)
    run = load_run(tmp_path / framework / "finetune")
    assert run.method.cfg.framework == framework
    state = {k: v.clone() for k, v in run.method.contrast.state_dict().items()}
    rows = measure(run, ("ns", "sg"), draws=3, batches=1, seed=0)
    for r in rows:
        assert r["loss_var"] > 0 and r["grad_var"] > 0 and math.isfinite(r["loss_mean"]), r
    assert all(torch.equal(v, state[k]) for k, v in run.method.contrast.state_dict().items())  # queues untouched
    with pytest.raises(ValueError, match=f"finetune.framework={framework}"):
        measure(run, ("ns", "sg-ref"), draws=2, batches=1)


def test_study_variance_measures_each_contrastive_arm_once_and_skips_the_others(run_dir, tmp_path, monkeypatch):
    """`arco study variance DIR`: one table per arm with a stage-2 contrastive run, the same numbers as measuring the
    run directly; an arm without one is skipped; a second call with the same settings reads the results back."""
    import json

    import arco.contrast_variance as cv
    from arco.study.variance import load_variance, measure_study

    study = tmp_path / "study"
    for arm, src in (("reference-sg", run_dir / "run"), ("batch-sg", run_dir / "batch")):
        (study / "runs" / arm / "seed0").mkdir(parents=True)
        (study / "runs" / arm / "seed0" / "finetune").symlink_to(src / "finetune")
    (study / "runs" / "supervised" / "seed0" / "supervised").mkdir(parents=True)
    arms = [{"arm": a} for a in ("supervised", "reference-sg", "batch-sg")]
    (study / "study.json").write_text(json.dumps({"arms": arms}))

    lines: list[str] = []
    rows = measure_study(study, seed=0, samplers=("ns", "sg"), draws=3, batches=1, report=lines.append)
    assert [(r["arm"], r["sampler"]) for r in rows] == [("reference-sg", "ns"), ("reference-sg", "sg"),
                                                          ("batch-sg", "ns"), ("batch-sg", "sg")]  # fmt: skip
    assert any(line.startswith("skipped supervised") for line in lines)
    direct = measure(load_run(run_dir / "run" / "finetune"), ("ns", "sg"), draws=3, batches=1, seed=0)
    assert [r["grad_var_ratio"] for r in rows[:2]] == [d["grad_var_ratio"] for d in direct]
    assert (study / "variance" / "batch-sg" / "contrast_variance.png").is_file()
    saved = load_variance(study)
    assert [float(r["grad_var_ratio"]) for r in saved] == pytest.approx([r["grad_var_ratio"] for r in rows])

    def fail(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(cv, "measure", fail)
    again = measure_study(study, seed=0, samplers=("ns", "sg"), draws=3, batches=1, report=lines.append)
    assert [float(r["grad_var_ratio"]) for r in again] == pytest.approx([r["grad_var_ratio"] for r in rows])
    with pytest.raises(AssertionError, match="measured again"):  # other settings: measured, not read back
        measure_study(study, seed=0, samplers=("ns", "sg"), draws=4, batches=1, report=lines.append)


def test_study_variance_arms_measures_the_matching_arms_and_keeps_earlier_ones(run_dir, tmp_path, monkeypatch):
    """`--arms GLOB`: only matching arms are measured; an arm measured in an earlier call stays in variance.csv;
    a pattern that matches no arm is an error naming the arms."""
    import json

    import arco.contrast_variance as cv
    from arco._checks import ConfigError
    from arco.study.variance import load_variance, measure_study

    study = tmp_path / "study"
    for arm, src in (("ref_sg", run_dir / "run"), ("batch_sg", run_dir / "batch"), ("ref_ns", run_dir / "run")):
        (study / "runs" / arm / "seed0").mkdir(parents=True)
        (study / "runs" / arm / "seed0" / "finetune").symlink_to(src / "finetune")
    (study / "study.json").write_text(json.dumps({"arms": [{"arm": a} for a in ("ref_ns", "ref_sg", "batch_sg")]}))
    calls: list[int] = []
    real = cv.measure

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(cv, "measure", counted)
    kw = dict(seed=0, samplers=("ns", "sg"), draws=3, batches=1, report=lambda line: None)
    first = measure_study(study, arms=["batch_*"], **kw)
    assert [r["arm"] for r in first] == ["batch_sg", "batch_sg"] and len(calls) == 1
    assert [r["arm"] for r in load_variance(study)] == ["batch_sg", "batch_sg"]
    second = measure_study(study, arms=["*_ns", "ref_sg"], **kw)
    assert len(calls) == 3  # ref_ns and ref_sg measured, batch_sg read back
    assert [r["arm"] for r in second] == ["ref_ns", "ref_ns", "ref_sg", "ref_sg", "batch_sg", "batch_sg"]
    assert [r["arm"] for r in load_variance(study)] == [r["arm"] for r in second]
    with pytest.raises(ConfigError, match=r"'\*_sag' matches no arm .*ref_ns, ref_sg, batch_sg"):
        measure_study(study, arms=["*_sag"], **kw)
