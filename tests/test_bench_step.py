"""benchmarks/bench_step.py and bench_ddp.py measure what they say (in-process, tiny shapes; no timing asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = {"size": 32, "batch": 2, "queries": 8, "negatives": 8, "bank": 16, "dim": 8, "iters": 2, "warmup": 1,
        "threads": 1, "device": "cpu", "precision": "fp32", "channels_last": False, "compile": False,
        "sampler": "sg", "preset": "test", "contrast": "batch"}  # fmt: skip


@pytest.fixture(scope="module")
def bench_step():
    return _load("bench_step")


@pytest.mark.parametrize("contrast", ["reference", "batch"])
def test_step_rows_carry_time_memory_and_the_contrastive_share(bench_step, contrast):
    tiny = {**TINY, "contrast": contrast}
    arco = bench_step.measure({**tiny, "what": "arco"})
    floor = bench_step.measure({**tiny, "what": "network"})
    ablated = bench_step.measure({**tiny, "what": "arco-no-contrast"})
    for row in (arco, floor, ablated):
        assert row["ms"] > 0 and row["peak_mb"] >= 0 and 0 <= row["contrast_share"] < 1
    assert arco["contrast_share"] > 0  # the loss call was timed
    assert floor["contrast_share"] == 0 and ablated["contrast_share"] == 0  # no loss call in these steps


def test_step_command_line_takes_any_shape(bench_step):
    args = bench_step._parser().parse_args(
        "--size 128 --batch 2 --queries 256 --negatives 512 --bank 30000 --dim 512 --sampler sg --iters 3 "
        "--threads 2 --device cpu --json".split()
    )
    assert (args.size, args.batch, args.queries, args.negatives, args.bank, args.dim) == (128, 2, 256, 512, 30000, 512)
    assert args.sampler == ["sg"] and args.iters == 3 and args.threads == 2 and args.json
    assert args.contrast == ["reference", "batch"]


def test_full_banks_are_filled(bench_step):
    import torch

    from arco.methods import ModelConfig
    from arco.methods.arco import ArcoFinetuneConfig, ArcoFinetuneMethod

    model = ModelConfig(dim=8, hidden_dim=8)
    m = ArcoFinetuneMethod(ArcoFinetuneConfig(contrast="batch", bank_size=16, nn_bank=8, nn_k=2), 4, 2, model)
    with torch.no_grad():
        bench_step._fill_banks(m)
    assert bool(m.contrast.bank_valid.all()) and bool(m.nn_loss.bank_valid.all())
    norms = m.contrast.bank.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    ref = ArcoFinetuneMethod(ArcoFinetuneConfig(bank_size=[40, 24], nn_bank=8, nn_k=2), 4, 2, model)
    with torch.no_grad():
        bench_step._fill_banks(ref)
    assert ref.contrast.banks.count.tolist() == [40, 24, 24, 24]
    norms = ref.contrast.banks.keys[:, :24].norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_ddp_bench_splits_the_global_batch(monkeypatch):

    monkeypatch.syspath_prepend(str(_BENCH))  # spawned ranks import it by name
    import bench_ddp

    whole = bench_ddp._batch(16, 4, seed=0, rank=0, world=1)
    parts = [bench_ddp._batch(16, 4, seed=0, rank=r, world=2) for r in range(2)]
    import torch

    assert torch.equal(torch.cat([p.image_l for p in parts]), whole.image_l)
    assert torch.equal(torch.cat([p.label_l for p in parts]), whole.label_l)
    row = bench_ddp.measure({"method": "supervised", "params": {}, "size": 16, "batch": 2, "dim": 8, "iters": 1,
                             "warmup": 1, "threads": 1, "device": "cpu", "sync_bn": False}, 1)  # fmt: skip
    assert row["ranks"] == 1 and row["images_per_s"] > 0 and row["ms_per_step"] > 0
