"""DDP on CPU (gloo, 2 spawned ranks): the global-batch split, gathered banks, 2 ranks = 1 rank, resume, writes.

What a 2-rank run shares with a 1-rank run of the same global batch (checked below): the data (rank r trains on
slice r of the global batch), the initial weights, the banks (keys gathered in rank order), and, with
``engine.sync_bn``, the BatchNorm statistics. What it does not share, by design: each rank's random draws
(sampler, CutMix, jitter, dropout: seeded ``seed + rank``), and losses that are not means over images/pixels (the
batch-level soft Dice of ``L_sup``: the Dice of 4 images is not the mean of the Dice of two pairs). The equality
test therefore switches those off: no dropout, no CutMix or jitter, lambda_contrast = 0 (its value is logged, not
trained on), ``unsup_weighting=ratio``, and the per-image soft Dice in place of the batch Dice.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from _ddp import run_ranks, spawn
from _tiny import tiny_data
from arco._checks import ConfigError
from arco.engine.distributed import per_rank_batch
from arco.engine.stream import BatchStream

#: arco-finetune with every per-rank random draw and every non-decomposable loss switched off (module docstring).
DECOMPOSABLE = {
    "cutmix_p": 0.0,
    "strong_view": "none",
    "lambda_contrast": 0.0,
    "unsup_weighting": "ratio",
    "confidence": 0.34,
}


def _load(out: Path, tag: str, rank: int) -> dict:
    return torch.load(out / f"{tag}-rank{rank}.pt", weights_only=False)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------------------ no processes needed
def test_ranks_split_the_global_batch_of_one_process():
    data = tiny_data(2, n_labeled=3, n_unlabeled=5)
    one = list(BatchStream(data.labeled, data.unlabeled, 4, 4, seed=3, start=0, total=4))
    parts = [list(BatchStream(data.labeled, data.unlabeled, 4, 4, 3, 0, 4, rank=r, world=2)) for r in range(2)]
    for it, batch in enumerate(one):
        halves = [p[it] for p in parts]
        assert all(h.image_l.shape[0] == 2 and h.image_u.shape[0] == 2 for h in halves)
        # Same items, same augmentation: rank r holds slice r of the global batch, bit for bit.
        assert torch.equal(torch.cat([h.image_l for h in halves]), batch.image_l)
        assert torch.equal(torch.cat([h.label_l for h in halves]), batch.label_l)
        assert torch.equal(torch.cat([h.image_u for h in halves]), batch.image_u)


def test_global_batch_must_divide_by_the_ranks():
    assert per_rank_batch("finetune", "batch_labeled", 8, 4) == 2
    with pytest.raises(ConfigError, match=r"finetune\.batch_labeled=6 is the GLOBAL batch.*divisible.*\(4\)"):
        per_rank_batch("finetune", "batch_labeled", 6, 4)


# ------------------------------------------------------------------------------------------------ banks gathered
def _enqueue_worker(rank: int, world: int, out: Path) -> None:
    from arco.losses import NearestNeighbourLoss, PixelContrastiveLoss, RelationalInstanceLoss
    from arco.losses.separation import ClassSelectors, PrototypeMemory

    inputs = _bank_inputs(rank)
    banks = _banks()
    banks["inst"].enqueue(inputs["inst"])
    banks["nn"].enqueue(inputs["nn"])
    banks["pixel"]._pending = inputs["pixel"]
    banks["pixel"].enqueue()
    banks["hard"].push(*inputs["hard"])
    torch.manual_seed(0)
    selectors = ClassSelectors(2, 8)
    banks["memory"].update(*inputs["memory"], selectors)
    assert isinstance(banks["inst"], RelationalInstanceLoss) and isinstance(banks["nn"], NearestNeighbourLoss)
    assert isinstance(banks["pixel"], PixelContrastiveLoss) and isinstance(banks["memory"], PrototypeMemory)
    torch.save({k: m.state_dict() for k, m in banks.items()}, out / f"banks-rank{rank}.pt")


def _banks() -> dict[str, torch.nn.Module]:
    from arco.losses import NearestNeighbourLoss, PixelContrastiveLoss, RelationalInstanceLoss
    from arco.losses.banks import ClassBanks
    from arco.losses.separation import PrototypeMemory

    torch.manual_seed(0)
    return {
        "hard": ClassBanks([7, 5, 5], 8),
        "inst": RelationalInstanceLoss(8, queue_size=6, slots=2),
        "nn": NearestNeighbourLoss(8, bank_size=5, k=2),
        "pixel": PixelContrastiveLoss(3, 8, num_queries=4, num_negatives=4, bank_size=6),
        "memory": PrototypeMemory(2, 3, 8),
    }


def _bank_inputs(rank: int) -> dict:
    g = torch.Generator().manual_seed(100 + rank)
    return {
        "inst": torch.randn(2, 2, 8, generator=g),
        "nn": torch.randn(2, 8, generator=g),
        "pixel": (torch.randn(3, 4, 8, generator=g), torch.rand(3, 4, generator=g) < 0.7),
        "hard": (torch.randn(3, 4, 8, generator=g), torch.rand(3, 4, generator=g) < 0.7),
        "memory": (
            torch.randn(6, 8, generator=g),
            torch.randint(0, 3, (6,), generator=g),
            torch.rand(6, generator=g) < 0.8,
        ),
    }


def test_banks_gather_every_rank_in_rank_order(tmp_path):
    """Each bank of a 2-rank run equals the bank one process fills with both ranks' rows, rank 0's first."""
    from arco.losses.separation import ClassSelectors

    spawn(_enqueue_worker, 2, tmp_path)
    got = [torch.load(tmp_path / f"banks-rank{r}.pt") for r in range(2)]
    a, b = _bank_inputs(0), _bank_inputs(1)
    ref = _banks()
    ref["inst"].enqueue(torch.cat([a["inst"], b["inst"]]))
    ref["nn"].enqueue(torch.cat([a["nn"], b["nn"]]))
    ref["pixel"]._pending = tuple(torch.cat([x, y], dim=1) for x, y in zip(a["pixel"], b["pixel"]))
    ref["pixel"].enqueue()
    ref["hard"].push(*(torch.cat([x, y], dim=1) for x, y in zip(a["hard"], b["hard"])))
    torch.manual_seed(0)
    ref["memory"].update(*(torch.cat([x, y]) for x, y in zip(a["memory"], b["memory"])), ClassSelectors(2, 8))
    for name, module in ref.items():
        for key, value in module.state_dict().items():
            assert torch.equal(got[0][name][key], value), (name, key)
            assert torch.equal(got[1][name][key], value), (name, key)
    # The rows really differ between ranks (otherwise the check above could not fail on a missing gather).
    assert not torch.equal(a["nn"], b["nn"])


# ------------------------------------------------------------------------------------ 2 ranks == 1 rank, writes
def test_two_ranks_train_like_one_rank_with_the_same_global_batch(tmp_path):
    """arco-finetune, 2 steps, global batch 4 + 4: 1 process vs 2 ranks with engine.sync_bn.

    Tolerances: after one step every tensor agrees to 1.4e-6 (relative, float32 reductions in another order);
    the second step amplifies that to at most 2e-5 (measured, norm-wise per tensor): the test allows 1e-4, plus an
    absolute 1e-6 on the norm of the difference: with the strong batch in its own forward (``strong_bn`` clean,
    the default) some decoder BatchNorm biases stay below 1e-4 in norm after two steps, and their float32 round-off
    (about 1e-7) is then 1e-3 of them. The
    logged losses agree to the 6 digits log.csv keeps (rel 1e-5). Not compared: the hard-negative banks, which
    hold each rank's own pixels in rank order (checked by replay).
    """
    base = {"method": "arco-finetune", "params": DECOMPOSABLE, "iterations": 2, "batch": 4, "decomposable": True}
    spawn(run_ranks, 1, tmp_path, {**base, "engine": {}, "run": str(tmp_path / "one"), "tag": "one"})
    spawn(run_ranks, 2, tmp_path, {**base, "engine": {"sync_bn": True}, "run": str(tmp_path / "two"), "tag": "two"})
    one, r0, r1 = _load(tmp_path, "one", 0), _load(tmp_path, "two", 0), _load(tmp_path, "two", 1)

    # Every rank holds bit-identical students, EMA teachers, heads and banks.
    assert r0["states"].keys() == r1["states"].keys()
    assert [k for k in r0["states"] if not torch.equal(r0["states"][k], r1["states"][k])] == []

    # Same weights, teachers and nearest-neighbour bank as one process, to float32 round-off.
    compared = 0
    for key, ref in one["states"].items():
        own_pixels = key.startswith("contrast.") or ("rep_head" in key and "running" in key)
        if own_pixels or not ref.is_floating_point():
            continue
        diff = float((r0["states"][key] - ref).norm())
        assert diff < 1e-4 * float(ref.norm()) + 1e-6, (key, diff, float(ref.norm()))
        compared += 1
    assert compared > 100 and "nn_loss.bank" in one["states"] and "teacher.out_conv.weight" in one["states"]

    rows1, rows2 = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [r["iteration"] for r in rows1] == [r["iteration"] for r in rows2] == ["1", "2"]
    for a, b in zip(rows1, rows2):
        for k in ("loss", "loss_sup", "loss_unsup", "loss_nn", "confident"):
            assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-5, abs=1e-7), (a["iteration"], k)
    assert float(rows1[-1]["loss_unsup"]) > 0 and float(rows1[-1]["loss_nn"]) > 0  # both terms are trained on

    # The banks hold each step's hard negatives of rank 0 then rank 1 (replayed in this process).
    from _tiny import SMALL
    from arco.losses.banks import ClassBanks
    from arco.losses.hard_negative import expand_capacities

    banks = ClassBanks(expand_capacities(SMALL["arco-finetune"]["bank_size"], 3), 16)
    assert len(r0["pending"]) == len(r1["pending"]) == 2
    for (k0, ok0), (k1, ok1) in zip(r0["pending"], r1["pending"]):
        assert not torch.equal(k0, k1)  # the ranks saw different pixels
        banks.push(torch.cat([k0, k1], dim=1), torch.cat([ok0, ok1], dim=1))
    assert int(banks.count.sum()) > 0
    for key in ("keys", "count", "ptr"):
        assert torch.equal(r0["states"][f"contrast.banks.{key}"], getattr(banks, key)), key

    # Only rank 0 wrote into the run folder (the audit hook saw rank 0's writes, so it works).
    assert r1["writes"] == []
    assert any("log.csv" in w for w in r0["writes"]) and any("last.pt" in w for w in r0["writes"])
    assert any(".arco.lock" in w for w in r0["writes"])


# ------------------------------------------------------------------------------------------------------- resume
def test_resume_under_ddp_is_exact(tmp_path):
    """A 2-rank arco-finetune run stopped at 3 and resumed to 6 ends bit-identical to an uninterrupted one
    (sampler, CutMix and jitter on: each rank resumes its own generator from last.pt)."""
    base = {"method": "arco-finetune", "iterations": 6, "batch": 4, "engine": {"deterministic": True, "log_every": 2}}
    spawn(run_ranks, 2, tmp_path, {**base, "run": str(tmp_path / "full"), "tag": "full"})
    spawn(run_ranks, 2, tmp_path, {**base, "run": str(tmp_path / "cut"), "tag": "cut", "stop_at": 3})
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert last["iteration"] == 3 and len(last["ranks"]) == 2
    gens = [r["method_state"]["generator"] for r in last["ranks"]]
    assert not torch.equal(gens[0], gens[1])  # seed + rank: the ranks draw differently
    spawn(run_ranks, 2, tmp_path, {**base, "run": str(tmp_path / "cut"), "tag": "resumed", "resume": True})
    full, resumed = _load(tmp_path, "full", 1), _load(tmp_path, "resumed", 1)
    diff = [k for k in full["states"] if not torch.equal(full["states"][k], resumed["states"][k])]
    assert diff == []
    assert [r["iteration"] for r in _rows(tmp_path / "cut")] == ["2", "3", "4", "6"]
    assert _rows(tmp_path / "cut")[-1] == _rows(tmp_path / "full")[-1]
    assert resumed["summary"]["completed_iterations"] == 6  # every rank returns rank 0's summary


def _locked_worker(rank: int, world: int, out: Path) -> None:
    from _tiny import run_method
    from arco._lock import FolderLockedError

    try:
        run_method(out / "run", "supervised", tiny_data(2), 2, batch=4)
    except FolderLockedError as exc:
        (out / f"error-rank{rank}.txt").write_text(f"FolderLockedError: {exc}")
    except Exception as exc:  # noqa: BLE001 - report what the rank raised
        (out / f"error-rank{rank}.txt").write_text(f"{type(exc).__name__}: {exc}")


def test_a_locked_folder_stops_every_rank_with_rank_0s_message(tmp_path):
    from arco._lock import run_lock

    with run_lock(tmp_path / "run"):  # this process trains into it
        spawn(_locked_worker, 2, tmp_path)
    errors = [(tmp_path / f"error-rank{r}.txt").read_text() for r in range(2)]
    assert errors[0].startswith("FolderLockedError") and f"pid {os.getpid()}" in errors[0]
    assert errors[1].split(": ", 1)[1] == errors[0].split(": ", 1)[1]
    assert not (tmp_path / "run" / "log.csv").exists()


# ----------------------------------------------------------------------------------------------------- all methods
def _all_methods_worker(rank: int, world: int, out: Path) -> None:
    from _tiny import MODEL2D, MODEL3D, run_method
    from arco.engine import EngineConfig
    from arco.methods import get_method, list_methods

    engine = EngineConfig(device="cpu", log_every=1, val_every=0, progress=False)
    done = []
    for name in list_methods(kind="method"):
        dims = get_method(name).spatial_dims[0]
        model = MODEL2D if dims == 2 else MODEL3D
        run_method(out / name, name, tiny_data(dims), 2, model=model, engine=engine, batch=4)
        done.append(name)
    (out / f"done-rank{rank}.txt").write_text("\n".join(done))


@pytest.mark.slow
def test_every_method_trains_under_ddp_with_identical_replicas(tmp_path):
    """Two steps of every registered method on 2 ranks; each log row checks (engine) that all ranks hold the same
    weights, teachers and banks, and raises otherwise."""
    from arco.methods import get_method, list_methods

    spawn(_all_methods_worker, 2, tmp_path)
    built_in = [n for n in list_methods(kind="method") if get_method(n).__module__.startswith("arco.methods.")]
    for r in range(2):
        assert (tmp_path / f"done-rank{r}.txt").read_text().split("\n") == built_in


# ------------------------------------------------------------------------------------------------------------ CLI
def test_nproc_checks_the_global_batch_before_launching(tmp_path, capsys):
    from _tiny import train_argv
    from arco.cli import main

    sets = ("schedule.batch_labeled=3",)
    extra = ("--method", "supervised", "--iterations", "1", "--nproc", "2")
    assert main(train_argv(tmp_path / "data", tmp_path / "run", sets, extra)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "supervised.batch_labeled=3 is the GLOBAL batch size" in err and "divisible by the number of ranks (2)" in err
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_arco_train_nproc_runs_torchrun_and_resumes(tmp_path):
    """`arco train --nproc 2` through torchrun (2 CPU processes): one log, one summary line, and --resume."""
    import subprocess
    import sys

    from _tiny import read_log, train_argv

    sets = ("schedule.batch_labeled=4", "schedule.batch_unlabeled=4", "engine.deterministic=false")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def train(iterations: int, *extra: str) -> subprocess.CompletedProcess:
        argv = train_argv(tmp_path / "data", tmp_path / "run", sets, ("--method", "supervised", "--iterations",
                          str(iterations), "--nproc", "2", *extra))  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "arco", *argv], capture_output=True, text=True, env=env, timeout=600
        )

    first = train(2)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("supervised: 2/2 iterations") == 1  # rank 0 alone reports
    second = train(4, "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    rows = read_log(tmp_path / "run" / "supervised" / "log.csv")
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4"]
    last = torch.load(tmp_path / "run" / "supervised" / "checkpoints" / "last.pt", weights_only=True)
    assert last["iteration"] == 4 and len(last["ranks"]) == 2
