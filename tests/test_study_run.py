"""Running tiny studies: stage sharing, outputs, a failing run, kill + --resume, and the Slurm path (submitit's
local executor)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import threading
import time

import pytest

from _html import parse_page
from _study import write_study
from arco.cli import main
from arco.study import SlurmOptions, run_study

SAMPLERS = {"ns": ["finetune.sampler=ns"], "sg": ["finetune.sampler=sg"]}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from arco.data.phantom import ensure_phantom

    return ensure_phantom(str(tmp_path_factory.mktemp("phantom") / "p2d"), "phantom2d", True, 6, 0, 32)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*.pt"))}


def test_shared_stage_once_outputs_failure_and_resume(tmp_path, phantom, monkeypatch):
    import arco.pipeline

    calls = []
    real = arco.pipeline.train

    def counting(cfg, out, only=None, **kw):
        calls.append((os.path.basename(str(out)), tuple(only or ())))
        return real(cfg, out, only=only, **kw)

    monkeypatch.setattr(arco.pipeline, "train", counting)
    late = tmp_path / "late.pt"  # the bad arm starts from a checkpoint that does not exist yet: its run fails
    grid = {"sampler": {**SAMPLERS, "bad": ["finetune.sampler=sag", f"finetune.init={late}"]}}
    path = write_study(tmp_path / "s.yaml", phantom, grid, compare_to={"sampler": "ns"})
    out = tmp_path / "study"
    summary = run_study(str(path), out, launcher="inline")

    # stage 1 trained once for the three arms (shared), each stage 2 once
    stages = [c[1][0] for c in calls]
    assert stages.count("pretrain") == 1 and stages.count("finetune") == 3, calls
    shared = list((out / "shared").iterdir())
    assert len(shared) == 1 and (shared[0] / "pretrain" / "checkpoints" / "last.pt").is_file()
    for arm in ("ns", "sg", "bad"):
        link = out / "runs" / arm / "seed0" / "pretrain"
        assert link.is_symlink() and link.resolve() == (shared[0] / "pretrain").resolve()
    (failed,) = summary["runs"]["failed"]
    assert failed["run"] == "bad/seed0" and "nor a checkpoint file" in failed["reason"]
    assert (
        failed["log"] == str(out / "logs" / "bad-seed0.log")
        and "late.pt" in (out / "logs" / "bad-seed0.log").read_text()
    )

    rows = _rows(out / "results.csv")
    assert [(r["arm"], r["class"]) for r in rows] == [(a, c) for a in ("ns", "sg") for c in ("RV", "Myo", "LV", "mean")]
    assert {
        "arm",
        "sampler",
        "seed",
        "dice",
        "jaccard",
        "hd95",
        "asd",
        "val_dice",
        "iterations",
        "train_seconds",
    } <= set(rows[0])
    assert rows[0]["iterations"] == "5" and float(rows[0]["train_seconds"]) > 0
    cases = _rows(out / "per_case.csv")
    assert {r["arm"] for r in cases} == {"ns", "sg"} and len(cases) == 2 * 3 * 1  # 2 runs x 3 classes x 1 test case
    study = json.loads((out / "study.json").read_text())
    assert [(c["arm"], c["reference"], c["n_pairs"], c["n_runs"]) for c in study["comparisons"]] == [
        ("sg", "ns", 1, 2), ("bad", "ns", 0, 0),
    ]  # fmt: skip
    md = (out / "study.md").read_text()
    assert "selected on the validation split only" in md and "bad/seed0" in md
    for png in ("dice_per_arm.png", "curves.png", "qualitative.png"):
        assert (out / png).stat().st_size > 1000
    # the qualitative panel shows every finished arm, with its Dice on the case, beside the image and the GT
    (panel,) = study["qualitative"]["panels"]
    assert (panel["file"], panel["reference"], panel["arms"]) == ("qualitative.png", "ns", ["ns", "sg"])
    for label, row in zip(panel["rows"], panel["titles"]):
        case = label.split(",")[0]
        expected = [
            sum(float(c["dice"]) for c in cases if (c["arm"], c["case"]) == (a, case)) / 3 for a in ("ns", "sg")
        ]
        assert row == ["image", "ground truth", *(f"{a}\nDice {d:.3f}" for a, d in zip(("ns", "sg"), expected))]
    page = parse_page((out / "study.html").read_text())
    assert {"ns", "sg", "bad/seed0"} <= page.cells and {"Dice RV", "Dice Myo", "Dice LV"} <= page.headers
    assert {"dice_per_arm.png", "curves.png", "qualitative.png"} <= page.images and page.scripts == 1
    assert page.sortable >= 3 and all(src.startswith("data:image/png;base64,") for src in page.image_sources)

    # `arco evaluate` understands a run folder, through the shared stage's link too
    linked = out / "runs" / "sg" / "seed0" / "pretrain"
    assert main(["evaluate", "--checkpoint", str(linked), "--out", str(tmp_path / "e"), "--overlays", "0"]) == 0

    # --resume after the cause is fixed: only the failed run's stage is trained; nothing finished is touched
    before = _mtimes(out)
    evals = {a: (out / "runs" / a / "seed0" / "evaluation" / "per_case.csv").stat().st_mtime_ns for a in ("ns", "sg")}
    shutil.copy(shared[0] / "pretrain" / "checkpoints" / "last.pt", late)
    calls.clear()
    again = run_study(str(path), out, resume=True, launcher="inline")
    assert not again["runs"]["failed"] and again["runs"]["finished"] == 3
    assert calls == [("seed0", ("finetune",))]
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert all(
        (out / "runs" / a / "seed0" / "evaluation" / "per_case.csv").stat().st_mtime_ns == t for a, t in evals.items()
    )
    calls.clear()
    run_study(str(path), out, resume=True, launcher="inline")
    assert calls == []  # a finished study trains nothing


def test_refuses_existing_study_without_resume(tmp_path, phantom):
    path = write_study(tmp_path / "s.yaml", phantom, {"sampler": {"ns": ["finetune.sampler=ns"]}})
    (tmp_path / "study" / "runs" / "x").mkdir(parents=True)
    assert main(["study", str(path), "--out", str(tmp_path / "study")]) == 2


def test_killed_worker_then_resume_finishes_without_retraining(tmp_path, phantom):
    grid = {"sampler": {"a": ["finetune.sampler=ns"], "b": ["finetune.sampler=sg", "finetune.iterations=24"]}}
    path = write_study(tmp_path / "s.yaml", phantom, grid)
    out = tmp_path / "study"
    result = {}
    thread = threading.Thread(target=lambda: result.update(s=run_study(str(path), out, jobs=1)))
    thread.start()
    b_last = out / "runs" / "b" / "seed0" / "finetune" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not b_last.is_file() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = (out / "logs" / "b-seed0.log").read_text()
    pid = int(re.search(r"job b-seed0: started \(pid (\d+)\)", log).group(1))
    os.kill(pid, signal.SIGKILL)  # the worker process this test's study started
    thread.join(timeout=120)
    failed = result["s"]["runs"]["failed"]
    assert [f["run"] for f in failed] == ["b/seed0"] and "died" in failed[0]["reason"]
    a_done = _mtimes(out / "runs" / "a") | _mtimes(out / "shared")
    assert a_done

    summary = run_study(str(path), out, resume=True, launcher="inline")
    assert not summary["runs"]["failed"] and summary["runs"]["finished"] == 2
    assert all(p.stat().st_mtime_ns == t for p, t in a_done.items())  # finished runs untouched
    s = json.loads((out / "runs" / "b" / "seed0" / "finetune" / "summary.json").read_text())
    assert s["finished"] and s["completed_iterations"] == 24
    assert "finetune: resuming from" in (out / "logs" / "b-seed0.log").read_text()


def test_slurm_path_with_submitit_local_executor(tmp_path, phantom):
    pytest.importorskip("submitit")
    grid = {"method": {"sup": {"method": "supervised"}}}
    path = write_study(tmp_path / "s.yaml", phantom, grid, seeds=(0,))
    out = tmp_path / "study"
    lines = []
    summary = run_study(
        str(path), out, launcher="slurm", slurm=SlurmOptions(cluster="local", cpus=1, time_min=10), report=lines.append
    )
    assert summary["runs"]["finished"] == 1 and not summary["runs"]["failed"]
    assert any(line.startswith("submitted 1 job(s)") for line in lines)
    assert list((out / "slurm").glob("*_submitted.pkl"))  # submitit's own job files
    assert len(_rows(out / "results.csv")) == 4  # 3 classes + mean
    # the job ran in submitit's own process, which wrote the job's log
    assert "job sup-seed0: started" in (out / "logs" / "sup-seed0.log").read_text()


def test_tuning_phase_then_frozen_choice_then_reuse_by_another_study(tmp_path, phantom, monkeypatch):
    import yaml

    import arco.pipeline

    calls = []
    real = arco.pipeline.train

    def counting(cfg, out, only=None, **kw):
        calls.append(str(out))
        return real(cfg, out, only=only, **kw)

    monkeypatch.setattr(arco.pipeline, "train", counting)
    grid = {"labeled": {"1": ["data.labeled=1"], "2": ["data.labeled=2"]}, "method": {"sup": {"method": "supervised"}}}
    tune = {"where": {"labeled": "1"}, "grid": {"sup": {"schedule.lr": [0.01, 0.03]}}}
    path = write_study(tmp_path / "s.yaml", phantom, grid, seeds=(0, 1), tune=tune)
    out = tmp_path / "study"
    summary = run_study(str(path), out, launcher="inline")
    assert not summary["runs"]["failed"] and summary["runs"]["finished"] == 4
    # 2 tuning runs + 4 main runs, one of which is the chosen tuning run (seed 0, labeled 1): 5 trainings
    assert len(calls) == 5 and sum("/shared/" in c for c in calls) == 2
    (choice,) = summary["tuning"]["choices"]
    lr = float(choice["values"]["schedule.lr"])
    vals = {c["setting"]: c["val_dice"] for c in choice["candidates"]}
    assert choice["val_dice"] == max(vals.values()) and choice["applies_to"] == ["labeled1_sup", "labeled2_sup"]
    for arm in ("labeled1_sup", "labeled2_sup"):
        for seed in (0, 1):
            run = out / "runs" / arm / f"seed{seed}"
            cfg = yaml.safe_load((run / "supervised" / "config.yaml").read_text())
            assert cfg["stages"][0]["schedule"]["lr"] == lr  # the frozen choice, every seed and count
            assert (run / "evaluation-last" / "per_case.csv").is_file()
    chosen = out / "tune" / "labeled1_sup" / choice["chosen"] / "seed0" / "supervised"
    assert (out / "runs" / "labeled1_sup" / "seed0" / "supervised").resolve() == chosen.resolve()
    assert not (out / "tune" / "labeled1_sup" / choice["chosen"] / "seed0" / "evaluation").exists()  # never tested
    rows = _rows(out / "results.csv")
    assert all(r["dice_last"] and r["best_iteration"] for r in rows) and (out / "per_case_last.csv").is_file()
    md = (out / "study.md").read_text()
    assert "## Tuning on validation" in md and f"schedule.lr={choice['values']['schedule.lr']}" in md
    assert "## Where validation Dice peaked" in md and "Dice mean (last ckpt)" in md
    assert summary["wall_total_seconds"] == summary["wall_seconds"] > 0 and len(summary["history"]) == 1
    assert summary["machine"]["torch"] and summary["commit"]

    # resumed: nothing trains, the history grows
    calls.clear()
    again = run_study(str(path), out, resume=True, launcher="inline")
    assert calls == [] and len(again["history"]) == 2
    assert again["wall_total_seconds"] == pytest.approx(summary["wall_seconds"] + again["wall_seconds"], abs=0.2)

    # another study with a run equal to labeled2_sup/seed0 links that stage instead of training it
    other = write_study(tmp_path / "o.yaml", phantom, {"method": {"sup": {"method": "supervised"}}},
                        extra=["data.labeled=2", f"schedule.lr={choice['values']['schedule.lr']}"])  # fmt: skip
    second = run_study(str(other), tmp_path / "second", launcher="inline", reuse=[out])
    assert calls == [] and second["runs"]["finished"] == 1
    linked = tmp_path / "second" / "runs" / "sup" / "seed0" / "supervised"
    assert linked.resolve() == (out / "runs" / "labeled2_sup" / "seed0" / "supervised").resolve()
    assert json.loads((tmp_path / "second" / "plan.json").read_text())["reused"]

    # resumed, the linked stage of the other study is left where it is, even when it holds no fingerprint record
    (linked.resolve() / "fingerprint.json").unlink()
    third = run_study(str(other), tmp_path / "second", resume=True, launcher="inline", reuse=[out])
    assert calls == [] and third["runs"]["finished"] == 1
    assert not (tmp_path / "second" / "stale").exists() and not (out / "stale").exists()
    assert linked.resolve() == (out / "runs" / "labeled2_sup" / "seed0" / "supervised").resolve()
    assert not (linked / "fingerprint.json").exists()  # another study's folder: not written into either
