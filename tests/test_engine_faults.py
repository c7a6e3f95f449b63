"""Engine and pipeline under faults: a kill between last.pt and best.pt, a stage killed before its summary, torn
logs, the skip-finished rule, a full disk or an unwritable folder while saving (clean stop, previous checkpoint
intact, resume to the same weights). The SIGKILL-anywhere subprocess tests are in test_kill_resume.py."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import subprocess
import sys

import pytest

import arco.engine.loop as loop
from _tiny import assert_same_run, read_log, run_method, tiny_data, train_argv
from arco.checkpoint import load_checkpoint
from arco.cli import main
from arco.config import StageConfig
from arco.engine import EngineConfig, ScheduleConfig
from arco.engine.logger import RunLogger
from arco.pipeline import _finished
from test_io import fail_writes

ENGINE = EngineConfig(device="cpu", log_every=1, val_every=2, deterministic=True, progress=False)
PR_CAPBSET_DROP = 24  # <linux/prctl.h>


class _Killed(BaseException):
    """Stands for a SIGKILL in-process: nothing after it runs, nothing catches it."""


def _squash(text: str) -> str:
    return "".join(text.split())  # the CLI wraps messages at 110 columns


def test_kill_between_last_pt_and_best_pt_is_repaired_on_resume(tmp_path, monkeypatch):
    data = tiny_data(2)
    improved: list[int] = []
    real = loop._Trainer.save_best

    def record(self, iteration, val_dice):
        improved.append(iteration)
        real(self, iteration, val_dice)

    monkeypatch.setattr(loop._Trainer, "save_best", record)
    run_method(tmp_path / "ref" / "s", "supervised", data, 10, engine=ENGINE, lr=0.1)
    assert len(improved) >= 2, improved  # the test needs a second improvement to kill at

    def killed(self, iteration, val_dice):
        if iteration == improved[1]:
            raise _Killed
        real(self, iteration, val_dice)

    monkeypatch.setattr(loop._Trainer, "save_best", killed)
    with pytest.raises(_Killed):
        run_method(tmp_path / "cut" / "s", "supervised", data, 10, engine=ENGINE, lr=0.1)
    ckpt = tmp_path / "cut" / "s" / "checkpoints"
    last = load_checkpoint(ckpt / "last.pt")
    assert last["iteration"] == last["best_iteration"] == improved[1]
    assert load_checkpoint(ckpt / "best.pt")["iteration"] == improved[0]  # one validation behind
    monkeypatch.setattr(loop._Trainer, "save_best", real)
    run_method(tmp_path / "cut" / "s", "supervised", data, 10, engine=ENGINE, lr=0.1, resume=True)
    assert assert_same_run(tmp_path / "ref", tmp_path / "cut", "s") > 0  # best.pt included


def test_stage_killed_before_its_summary_finishes_on_resume(tmp_path):
    data = tiny_data(2)
    _, first = run_method(tmp_path, "supervised", data, 4, engine=ENGINE)
    log = (tmp_path / "log.csv").read_text()
    (tmp_path / "summary.json").unlink()
    (tmp_path / "curves.png").unlink()
    _, again = run_method(tmp_path, "supervised", data, 4, engine=ENGINE, resume=True)
    first.pop("wall_seconds"), again.pop("wall_seconds")
    assert again == first and again["final_losses"]  # the last log row is kept in last.pt
    assert (tmp_path / "log.csv").read_text() == log and (tmp_path / "curves.png").is_file()


def test_resumed_log_drops_rows_after_the_checkpoint_and_a_torn_line(tmp_path):
    cols = ("iteration", "stage", "lr", "loss", "val_dice")
    rows = "".join(f"{i},s,0.01,{1 / i:.6g},\r\n" for i in range(1, 7))
    (tmp_path / "log.csv").write_text("iteration,stage,lr,loss,val_dice\r\n" + rows + "7,s,0.0")  # killed mid-row
    RunLogger(tmp_path, cols, resume_iteration=10).close()
    assert [r["iteration"] for r in read_log(tmp_path / "log.csv")] == ["1", "2", "3", "4", "5", "6"]
    logger = RunLogger(tmp_path, cols, resume_iteration=4)
    logger.write({"iteration": 5, "stage": "s", "lr": 0.01, "loss": 0.5, "val_dice": None}, sync=True)
    logger.close()
    assert [r["iteration"] for r in read_log(tmp_path / "log.csv")] == ["1", "2", "3", "4", "5"]
    assert read_log(tmp_path / "log.csv")[-1]["loss"] == "0.5"


def test_pipeline_skips_only_a_readable_finished_summary_of_the_same_stage(tmp_path):
    stage = StageConfig("supervised", "supervised", ScheduleConfig(iterations=4), params=None)
    path = tmp_path / "summary.json"
    assert _finished(tmp_path, stage) is None
    done = {"stage": "supervised", "method": "supervised", "iterations": 4, "finished": True}
    for summary, skipped in [
        (done, True),
        ({**done, "finished": False}, False),
        ({**done, "iterations": 8}, False),  # the config changed: resume (and check) instead
        ({**done, "method": "arco-finetune"}, False),
    ]:
        path.write_text(json.dumps(summary))
        assert (_finished(tmp_path, stage) == summary) is skipped, summary
    path.write_text('{"finished": tr')  # not written by arco's atomic writer
    assert _finished(tmp_path, stage) is None


def test_full_disk_while_saving_stops_cleanly_and_resume_reaches_the_same_weights(tmp_path, monkeypatch, capsys):
    def argv(out, *extra):
        return train_argv(tmp_path / "data", out, ["schedule.iterations=6"], ("--method", "supervised", *extra))

    assert main(argv(tmp_path / "ref")) == 0
    fail_writes(monkeypatch, 0.5, errno.ENOSPC, name="last.pt", nth=2)  # the disk fills up mid-checkpoint
    capsys.readouterr()
    assert main(argv(tmp_path / "run")) == 2
    last = tmp_path / "run" / "supervised" / "checkpoints" / "last.pt"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for words in (f"cannotwrite{last}:Nospaceleftondevice(ENOSPC)", "previouslast.pt", "intact", "freespace"):
        assert words in _squash(err), (words, err)
    assert load_checkpoint(last)["iteration"] == 2  # the previous checkpoint, whole
    assert not list((tmp_path / "run").rglob("*.arco-tmp"))
    monkeypatch.undo()
    assert main(argv(tmp_path / "run", "--resume")) == 0
    assert assert_same_run(tmp_path / "ref", tmp_path / "run", "supervised") > 0


def _run_cli(argv: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "arco", *argv], capture_output=True, text=True, env=env,
                          timeout=600, **kw)  # fmt: skip


def _without_root_file_powers() -> None:
    """Drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the bounding set (before exec): root then
    obeys file permissions like any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unwritable_checkpoint_folder_stops_cleanly_with_the_previous_checkpoint_intact(tmp_path):
    """A real EACCES from the kernel, also as root (CI): the resumed run gives up root's power over permissions."""
    run = tmp_path / "run"
    assert main(train_argv(tmp_path / "data", run, ["schedule.iterations=4"], ("--method", "supervised"))) == 0
    ckpt = run / "supervised" / "checkpoints"
    ckpt.chmod(0o555)
    try:
        resume = train_argv(tmp_path / "data", run, ["schedule.iterations=6"], ("--method", "supervised", "--resume"))
        proc = _run_cli(resume, preexec_fn=_without_root_file_powers if os.geteuid() == 0 else None)
    finally:
        ckpt.chmod(0o755)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    err = _squash(proc.stderr)
    assert f"cannotwrite{ckpt}/" in err and "Permissiondenied(EACCES)" in err, proc.stderr
    assert "makethefolderwritable" in err and "intact" in err
    assert load_checkpoint(ckpt / "last.pt")["iteration"] == 4
    assert not list(run.rglob("*.arco-tmp"))


def test_file_size_limit_while_saving_is_a_clean_cli_error(tmp_path):
    """A real OS write error as any user: RLIMIT_FSIZE makes writes past 1 MiB fail with EFBIG (Python ignores
    SIGXFSZ), as a full disk would."""
    assert (
        main(train_argv(tmp_path / "data", tmp_path / "warm", ["schedule.iterations=1"], ("--method", "supervised")))
        == 0
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))

    out = tmp_path / "run"
    proc = _run_cli(train_argv(tmp_path / "data", out, ["schedule.iterations=4"], ("--method", "supervised")),
                    preexec_fn=limit)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = out / "supervised" / "checkpoints" / "last.pt"
    assert f"cannotwrite{last}:Filetoolarge(EFBIG)" in _squash(proc.stderr), proc.stderr
    assert "ulimit-f" in _squash(proc.stderr)
    assert not last.exists() and not list(out.rglob("*.arco-tmp"))
