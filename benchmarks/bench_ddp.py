"""DDP scaling: global-batch throughput (images/s) from 1 to N ranks, and the efficiency against 1 rank.

Strong scaling, as training with ``torchrun`` / ``arco train --nproc N`` does: the global batch is fixed (the
paper's) and each of the N ranks trains on ``batch / N`` labeled + ``batch / N`` unlabeled images. A step is the
engine's own (DDP stand-ins, gradient all-reduce, buffer averaging, gathered banks). Throughput counts labeled and
unlabeled images of the global batch; efficiency = throughput(N) / (N x throughput(1)).

Ranks are spawned on this machine with the gloo backend on CPU (``--threads`` torch threads each) or NCCL on GPUs
(one GPU per rank, ``--device cuda``). On a shared CPU box the figures are noisy: give each rank the same threads
and compare within one run.

    python benchmarks/bench_ddp.py                                        # supervised + arco-finetune, 1 and 2 ranks
    python benchmarks/bench_ddp.py --ranks 1 2 4 8 --device cuda --size 256 --batch 8 --iters 50
    python benchmarks/bench_ddp.py --methods arco-finetune --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

NUM_CLASSES = 4


def _batch(size: int, b: int, seed: int, rank: int, world: int) -> Any:
    """This rank's slice of a phantom-like global batch (nested discs, classes 1-3)."""
    from arco.methods import Batch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")

    def labels() -> torch.Tensor:
        c = size * (0.35 + 0.3 * torch.rand(b, 2, generator=g))
        r = torch.sqrt((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) / size
        return torch.where(r < 0.08, 3, torch.where(r < 0.13, 2, torch.where(r < 0.2, 1, 0))).long()

    lab, unl = labels(), labels()
    noise = 0.1 * torch.randn(2, b, 1, size, size, generator=g)
    part = slice(rank * b // world, (rank + 1) * b // world)
    return Batch((lab.float()[:, None] / 3 + noise[0])[part], lab[part], (unl.float()[:, None] / 3 + noise[1])[part])


def _rank(rank: int, world: int, spec: dict[str, Any], out: str) -> None:
    from arco.engine import EngineConfig, OptimConfig, ScheduleConfig, StageSpec
    from arco.engine.loop import _Trainer
    from arco.methods import ModelConfig, build_method, get_method

    torch.set_num_threads(spec["threads"])
    cuda = spec["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{out}/rdzv-{world}",
                                rank=rank, world_size=world)  # fmt: skip
    name = spec["method"]
    params = get_method(name).config_class(**spec.get("params", {}))
    torch.manual_seed(0)
    method = build_method(
        name, params, NUM_CLASSES, 2, ModelConfig(arch="unet", dim=spec["dim"], hidden_dim=spec["dim"])
    )
    data = argparse.Namespace(spatial_dims=2, val=[], labeled=None, unlabeled=None)
    schedule = ScheduleConfig(iterations=10**6, batch_labeled=spec["batch"], batch_unlabeled=spec["batch"])
    engine = EngineConfig(device=spec["device"], progress=False, sync_bn=spec["sync_bn"])
    trainer = _Trainer(method, data, StageSpec("bench", schedule), OptimConfig(), engine, Path(out), {}, "default")
    trainer.prepare()
    method.set_training(True)
    batches = [_batch(spec["size"], spec["batch"], s, rank, world) for s in range(4)]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()
        if world > 1:
            dist.barrier()

    for it in range(spec["warmup"]):
        trainer.step(batches[it % 4], it)
    sync()
    t0 = time.perf_counter()
    for it in range(spec["iters"]):
        trainer.step(batches[it % 4], spec["warmup"] + it)
    sync()
    seconds = time.perf_counter() - t0
    if rank == 0:
        (Path(out) / f"result-{world}.json").write_text(json.dumps({"seconds": seconds}))
    if world > 1:
        dist.destroy_process_group()


def measure(spec: dict[str, Any], world: int) -> dict[str, Any]:
    """Run ``spec`` on ``world`` ranks; returns the JSON row (``images_per_s``, ``ms_per_step``)."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank, (world, spec, out), nprocs=world, join=True)
        seconds = json.loads((Path(out) / f"result-{world}.json").read_text())["seconds"]
    images = 2 * spec["batch"] * spec["iters"]
    return {**spec, "ranks": world, "ms_per_step": 1000 * seconds / spec["iters"], "images_per_s": images / seconds}


PARAMS = {
    "arco-finetune": {"num_queries": 64, "num_negatives": 128, "bank_size": 512, "confidence": 0.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["supervised", "arco-finetune"])
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--size", type=int, default=64, help="image side (default 64: a small, CPU-sized step)")
    ap.add_argument("--batch", type=int, default=4, help="GLOBAL batch: labeled (and as many unlabeled) images")
    ap.add_argument("--dim", type=int, default=64, help="representation width")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--sync-bn", action="store_true", help="engine.sync_bn")
    ap.add_argument("--json", action="store_true", help="one JSON object per measurement")
    args = ap.parse_args()
    for r in args.ranks:
        if args.batch % r:
            ap.error(f"--batch {args.batch} (global) is not divisible by {r} ranks")
    if not args.json:
        print(f"device={args.device} threads/rank={args.threads} global batch={args.batch}+{args.batch} "
              f"size={args.size} torch={torch.__version__}")  # fmt: skip
        print("| method | ranks | ms/step | images/s | speed-up | efficiency |")
        print("|---|---|---|---|---|---|")
    for name in args.methods:
        base = None
        for world in args.ranks:
            spec = {"method": name, "params": PARAMS.get(name, {}), "size": args.size, "batch": args.batch,
                    "dim": args.dim, "iters": args.iters, "warmup": args.warmup, "threads": args.threads,
                    "device": args.device, "sync_bn": args.sync_bn}  # fmt: skip
            row = measure(spec, world)
            base = base or (row["images_per_s"] if world == 1 else None)
            row["speedup"] = None if base is None else row["images_per_s"] / base
            row["efficiency"] = None if base is None else row["speedup"] / world
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                sp = "-" if row["speedup"] is None else f"{row['speedup']:.2f}x"
                ef = "-" if row["efficiency"] is None else f"{100 * row['efficiency']:.0f} %"
                print(f"| {name} | {world} | {row['ms_per_step']:.1f} | {row['images_per_s']:.1f} | {sp} | {ef} |",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
