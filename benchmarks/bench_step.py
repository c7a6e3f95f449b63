"""Stage-2 (arco-finetune) step cost per sampler, and the gain of evaluating the representation head only at
sampled pixels versus a dense full-resolution head.

For each preset and variant it prints ms per iteration (forward + backward + SGD step + EMA/bank updates), the
peak memory (CUDA: max allocated; CPU: peak RSS of a fresh worker process per variant) and the share of the
step spent in pixel sampling and in the whole contrastive loss (sampling + head at sampled pixels + InfoNCE),
timed around those calls. Ratios are computed within the same run.

    python benchmarks/bench_step.py                       # CPU: cpu preset, 5 iterations; acdc preset, 2
    python benchmarks/bench_step.py --presets acdc --iters 20 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import time
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Paper / acdc preset: 256x256, batch 4 + 4, D = 512, 256 queries x 512 negatives.
    "acdc": {"size": 256, "bl": 4, "bu": 4, "dim": 512, "queries": 256, "negatives": 512, "bank": 2048},
    # CPU-sized (the demo preset): 64x64, batch 2 + 2, D = 64, 64 queries x 128 negatives.
    "cpu": {"size": 64, "bl": 2, "bu": 2, "dim": 64, "queries": 64, "negatives": 128, "bank": 512},
}
VARIANTS = ("ns", "sg", "sag", "sg-dense")


def _labels(b: int, size: int, generator: Any) -> Any:
    """Phantom-like label maps: three nested blobs (classes 1-3) at random centres on background 0."""
    import torch

    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = size * (0.35 + 0.3 * torch.rand(b, 2, generator=generator))
    r = torch.sqrt((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) / size
    return torch.where(r < 0.08, 3, torch.where(r < 0.13, 2, torch.where(r < 0.2, 1, 0))).long()


@contextlib.contextmanager
def _dense_head():
    """Make ``forward_at`` run the dense full-resolution head and then gather (the naive implementation)."""
    from arco.models import RepresentationHead

    original = RepresentationHead.forward_at

    def dense_at(self, features, index, spatial_shape):
        dense = self.forward(features)  # (B, D, *S) at full resolution
        return dense.movedim(1, -1).reshape(-1, self.dim)[index]

    RepresentationHead.forward_at = dense_at
    try:
        yield
    finally:
        RepresentationHead.forward_at = original


def _measure(preset: str, variant: str, iters: int, device_name: str, threads: int) -> dict[str, float]:
    import resource

    import torch

    import arco.losses.contrastive as contrastive
    from arco.methods import Batch, ModelConfig
    from arco.methods.arco import ArcoFinetuneConfig, ArcoFinetuneMethod

    if threads > 0:
        torch.set_num_threads(threads)
    p = PRESETS[preset]
    device = torch.device(device_name)
    sampler = variant.split("-")[0]
    cfg = ArcoFinetuneConfig(
        sampler=sampler,
        num_queries=p["queries"],
        num_negatives=p["negatives"],
        bank_size=p["bank"],
        confidence=0.0,
    )
    torch.manual_seed(0)
    m = ArcoFinetuneMethod(cfg, 4, 2, ModelConfig(arch="unet", dim=p["dim"], hidden_dim=p["dim"]))
    m.setup(device, 0)
    m.train(True)
    opt = torch.optim.SGD(m.param_groups(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    s, bl, bu = p["size"], p["bl"], p["bu"]
    label = _labels(bl, s, g)
    batch = Batch(
        (label.float()[:, None] / 3 + 0.1 * torch.randn(bl, 1, s, s, generator=g)),
        label,
        (_labels(bu, s, g).float()[:, None] / 3 + 0.1 * torch.randn(bu, 1, s, s, generator=g)),
    ).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    timers = {"sampling": 0.0, "contrast": 0.0}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            sync()
            t = time.perf_counter()
            out = fn(*a, **k)
            sync()
            timers[name] += time.perf_counter() - t
            return out

        return wrapper

    orig_sample = contrastive.sampling.sample_per_class
    orig_forward = type(m.contrast).forward
    ctx = _dense_head() if variant.endswith("dense") else contextlib.nullcontext()
    with ctx:
        step = 0

        def one() -> None:
            nonlocal step
            out = m.training_step(batch, step)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            m.after_optimizer_step(step)
            step += 1

        one()  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        contrastive.sampling.sample_per_class = timed("sampling", orig_sample)
        type(m.contrast).forward = timed("contrast", orig_forward)
        try:
            sync()
            t0 = time.perf_counter()
            for _ in range(iters):
                one()
            sync()
            total = time.perf_counter() - t0
        finally:
            contrastive.sampling.sample_per_class = orig_sample
            type(m.contrast).forward = orig_forward
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "ms": 1000 * total / iters,
        "peak_mb": peak,
        "sampling_share": timers["sampling"] / total,
        "contrast_share": timers["contrast"] / total,
    }


def _worker(args: tuple, queue: Any) -> None:
    queue.put(_measure(*args))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["cpu", "acdc"], choices=sorted(PRESETS))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--iters", type=int, default=0, help="timed iterations (default: 5 on CPU presets, acdc 2)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args()

    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    ctx = mp.get_context("spawn")
    print(f"device={device} threads={args.threads} torch={torch.__version__}")
    print("| preset | variant | ms/iter | peak MB | sampling % | contrastive loss % | vs SG |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        iters = args.iters or (2 if preset == "acdc" and device == "cpu" else 5)
        results = {}
        for variant in args.variants:
            q = ctx.Queue()
            proc = ctx.Process(target=_worker, args=((preset, variant, iters, device, args.threads), q))
            proc.start()
            results[variant] = q.get()
            proc.join()
        ref = results.get("sg")
        for variant, r in results.items():
            ratio = f"{r['ms'] / ref['ms']:.2f}x" if ref else "-"
            print(
                f"| {preset} | {variant} | {r['ms']:.1f} | {r['peak_mb']:.0f} | "
                f"{100 * r['sampling_share']:.1f} | "
                f"{100 * r['contrast_share']:.1f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
