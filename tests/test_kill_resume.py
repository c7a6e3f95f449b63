"""Kill-anywhere resume: ``arco train`` SIGKILLed at seeded random moments, then ``--resume``d until it finishes,
ends with the same files as an uninterrupted run: every tensor of each stage's ``last.pt`` (modules, optimiser, method
and RNG state), ``best.pt``, ``log.csv`` and ``summary.json`` (CPU, ``engine.deterministic=true``, no loader workers).

Two kinds of kill, both real SIGKILLs of a real ``arco`` process: a timer (the resumed run logged a seeded random
number of further rows, then a random delay up to 0.15 s) and a kill inside a chosen file write (``tests/_crash.py``:
during the N-th write of ``last.pt`` / ``best.pt`` / ``summary.json`` / ``log.csv`` of that process, after a random
fraction of its bytes). Training is deterministic, so where a write kill lands depends only on where the run stood;
the plans count from there, so that every kill lands before the run ends on fast and slow machines alike.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from _tiny import assert_same_run, train_argv
from arco.engine.logger import read_rows

CRASH = Path(__file__).with_name("_crash.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
ARCO = ["pretrain.queue_size=4", "finetune.num_queries=8", "finetune.num_negatives=8", "finetune.bank_size=16",
        "finetune.nn_bank=4", "finetune.nn_k=2"]  # fmt: skip


def _rows(run: Path, stages: tuple[str, ...]) -> int:
    """Log rows written so far over all stages (one per iteration with log_every=1)."""
    total = 0
    for stage in stages:
        try:
            total += max((run / stage / "log.csv").read_text().count("\n") - 1, 0)
        except FileNotFoundError:
            pass
    return total


def _run_until(cmd: list[str], log: Path, run: Path, stages: tuple[str, ...], rows: int, delay: float) -> int:
    """Start ``cmd``; SIGKILL it ``delay`` s after ``run`` holds ``rows`` log rows. Returns its exit status."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, env=ENV)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if _rows(run, stages) >= rows:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        return proc.wait(timeout=600)


def _landed(run: Path, stages: tuple[str, ...]) -> dict[str, Any]:
    """Where a kill left the run: per stage, last.pt's iteration, log rows, summary present, stray temporaries."""
    out = {}
    for stage in stages:
        d = run / stage
        last = d / "checkpoints" / "last.pt"
        it = torch.load(last, weights_only=True)["iteration"] if last.is_file() else None
        strays = sorted(p.name for p in d.rglob("*.arco-tmp")) if d.is_dir() else []
        log = (d / "log.csv").read_text() if (d / "log.csv").is_file() else ""
        rows, torn = len(read_rows(d / "log.csv")) if log else 0, bool(log) and not log.endswith("\n")
        out[stage] = {"last.pt": it, "rows": rows, "torn row": torn, "summary": (d / "summary.json").is_file(),
                      "strays": strays}  # fmt: skip
    return out


def _kill_and_resume(tmp_path: Path, sets: list[str], stages: tuple[str, ...], plan: list[tuple],
                     method: tuple[str, ...] = ()) -> list[dict]:  # fmt: skip
    """The uninterrupted reference run, then ``plan``'s kills (each run resumes the last), then a final resume."""
    data, ref, run, log = tmp_path / "data", tmp_path / "ref", tmp_path / "run", tmp_path / "arco.log"
    ref_proc = subprocess.run(
        [sys.executable, "-m", "arco", *train_argv(data, ref, sets, method)], capture_output=True, env=ENV
    )
    assert ref_proc.returncode == 0, ref_proc.stderr.decode()[-2000:]
    report = []
    for i, kill in enumerate(plan):
        extra = (*method, "--resume") if i else method
        if kill[0] == "time":  # kill[1] more log rows than the run holds now, then kill[2] seconds
            cmd = [sys.executable, "-m", "arco", *train_argv(data, run, sets, extra)]
            code = _run_until(cmd, log, run, stages, rows=_rows(run, stages) + kill[1], delay=kill[2])
        else:
            cmd = [
                sys.executable,
                str(CRASH),
                f"{kill[1]}:{kill[2]}:{kill[3]}",
                "--",
                *train_argv(data, run, sets, extra),
            ]
            with open(log, "ab") as fh:
                code = subprocess.run(cmd, stdout=fh, stderr=fh, env=ENV, timeout=600).returncode
        assert code in (-signal.SIGKILL, 0), (kill, code, log.read_text()[-2000:])
        report.append({"kill": kill, "killed": code == -signal.SIGKILL, "left": _landed(run, stages)})
    final = subprocess.run([sys.executable, "-m", "arco", *train_argv(data, run, sets, (*method, "--resume"))],
                           capture_output=True, env=ENV, timeout=600)  # fmt: skip
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    assert sum(r["killed"] for r in report) >= len(plan) - 1, report  # one timer may lose the race to the end
    tensors = sum(assert_same_run(ref, run, stage) for stage in stages)
    for r in report:
        print("kill", r["kill"], "killed" if r["killed"] else "finished first", "->", r["left"])
    print(f"{len(report)} kills; {tensors} tensors of last.pt/best.pt equal to the uninterrupted run")
    return report


@pytest.mark.slow
def test_supervised_killed_anywhere_resumes_to_the_same_weights(tmp_path):
    rng = random.Random(12)
    n = 10
    plan = [
        ("time", rng.randint(2, 4), rng.uniform(0.0, 0.15)),  # a timer, in the first half
        ("write", "last.pt", 1, rng.random()),  # inside the next checkpoint write
        ("write", "summary.json", 1, rng.random()),  # all iterations done, summary.json not yet written
    ]
    report = _kill_and_resume(tmp_path, [f"schedule.iterations={n}"], ("supervised",), plan, ("--method", "supervised"))
    # The summary.json kill comes after the last iteration: the resumed run trains no step, it only finishes.
    assert report[-1]["left"]["supervised"]["last.pt"] == n and not report[-1]["left"]["supervised"]["summary"]


@pytest.mark.slow
def test_arco_two_stages_killed_anywhere_resume_to_the_same_weights(tmp_path):
    rng = random.Random(2023)
    p, f = 8, 10
    plan = [
        ("time", rng.randint(2, 4), rng.uniform(0.0, 0.15)),  # a timer inside pretrain
        ("write", "last.pt", 1, rng.random()),  # inside pretrain's next checkpoint write
        ("write", "summary.json", 1, rng.random()),  # stage boundary: pretrain done, its summary not written
        ("write", "best.pt", 1, 0.0),  # finetune's first validation: after last.pt, before best.pt
        ("write", "log.csv", rng.randint(2, 5), rng.random()),  # a torn log row (write 1 is the log's rewrite)
        ("time", rng.randint(1, 2), rng.uniform(0.0, 0.15)),  # a timer inside finetune
    ]
    sets = [*ARCO, f"pretrain.iterations={p}", f"finetune.iterations={f}"]
    _kill_and_resume(tmp_path, sets, ("pretrain", "finetune"), plan)


def test_without_validation_save_every_gives_a_checkpoint_to_resume_from(tmp_path):
    """val_every=0, save_every=3: SIGKILLed inside the second write of last.pt (iteration 6 of 8), the run resumes
    from iteration 3's last.pt and ends with the uninterrupted run's weights, log and summary."""
    sets = ["schedule.iterations=8", "engine.val_every=0", "engine.save_every=3"]
    plan = [("write", "last.pt", 2, 0.5)]
    report = _kill_and_resume(tmp_path, sets, ("supervised",), plan, ("--method", "supervised"))
    assert report[0]["killed"] and report[0]["left"]["supervised"]["last.pt"] == 3
