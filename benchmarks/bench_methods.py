"""Training-step cost of every registered method at one preset, as ratios to ``supervised`` measured in the same run.

Every method in the registry (built-in or plug-in; nothing here names one) that runs in 2D is built with the
phantom2d preset's model and, where the preset trains that method, the preset's stage parameters (otherwise the
method's defaults), for 4 classes at ``--size`` x ``--size`` with ``--batch`` labeled + ``--batch`` unlabeled
phantom-like images. One step is what the engine does: ``training_step`` + backward + optimiser step(s) +
``after_optimizer_step``; ``--warmup`` steps are run first, then ``--iters`` steps are timed.

Each method is measured in a fresh spawned process, so one method's allocations cannot inflate another's peak.
Peak memory is the growth of the process's peak resident set (``VmHWM``, reset after imports and batch creation
where Linux allows it; otherwise the peak RSS minus the RSS at that point; a small UNet step runs first so
torch's one-time allocations are not counted) on CPU, and ``max_memory_allocated`` on
CUDA. Ratios divide by the ``supervised`` row of the same run.

    python benchmarks/bench_methods.py                         # all methods, 128x128, batch 4+4, 5 iterations
    python benchmarks/bench_methods.py --methods supervised mean-teacher --iters 10 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

NUM_CLASSES = 4
PRESET = "phantom2d"


def methods_2d(plugins: tuple[str, ...] = ()) -> list[str]:
    """Registered methods that run in 2D, ``supervised`` first (the reference row)."""
    from arco.methods import get_method, list_methods, load_plugins

    load_plugins(plugins)
    names = [n for n in list_methods(kind="method") if 2 in get_method(n).spatial_dims]
    return sorted(names, key=lambda n: (n != "supervised", n))


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) of this process; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _batches(n: int, size: int, bl: int, bu: int, seed: int = 0) -> list[Any]:
    """``n`` different phantom-like batches: nested discs (classes 1-3) at random centres plus noise."""
    import torch

    from arco.methods import Batch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")

    def labels(b: int) -> torch.Tensor:
        c = size * (0.35 + 0.3 * torch.rand(b, 2, generator=g))
        r = torch.sqrt((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) / size
        return torch.where(r < 0.08, 3, torch.where(r < 0.13, 2, torch.where(r < 0.2, 1, 0))).long()

    def image(lab: torch.Tensor) -> torch.Tensor:
        return lab.float()[:, None] / 3 + 0.1 * torch.randn(lab.shape[0], 1, size, size, generator=g)

    out = []
    for _ in range(n):
        lab = labels(bl)
        out.append(Batch(image(lab), lab, image(labels(bu))))
    return out


def _warm_up_torch(device: Any) -> None:
    """One step of a small UNet so that torch's lazy one-time allocations (kernels, thread pools, autograd) happen
    before the peak counter is reset and are not charged to the method measured."""
    import torch

    from arco.models import UNet

    net = UNet(1, NUM_CLASSES).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net(torch.zeros(2, 1, 32, 32, device=device)).logits.mean().backward()
    opt.step()
    del net, opt


def measure(name: str, size: int, batch: int, iters: int, warmup: int, threads: int, device: str,
            plugins: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """ms per step and peak memory of method ``name`` (in the calling process)."""
    import dataclasses
    import resource

    import torch

    from arco.config import load_config
    from arco.engine import OptimConfig, seed_everything
    from arco.engine.optim import Optimizers
    from arco.methods import build_method, get_method, load_plugins

    if threads > 0:
        torch.set_num_threads(threads)
    load_plugins(plugins)
    dev = torch.device(device)
    preset = load_config(PRESET)
    cls = get_method(name)
    params = next((s.params for s in preset.stages if s.method == cls.name), None) or cls.config_class()
    model = dataclasses.replace(preset.model, in_channels=1)
    batches = [b.to(dev) for b in _batches(min(warmup + iters, 4), size, batch, batch)]
    _warm_up_torch(dev)
    seed_everything(0)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    hwm = _reset_peak_rss()
    rss0 = _rss_kib("VmRSS") or 0
    method = build_method(cls.name, params, NUM_CLASSES, 2, model)
    method.setup(dev, 0, warmup + iters)
    method.set_training(True)
    opt = Optimizers(method.param_groups(), OptimConfig(), 0.01)
    scaler = torch.amp.GradScaler(dev.type, enabled=False)

    def step(it: int) -> None:
        b = batches[it % len(batches)]
        out = method.training_step(b if method.needs_unlabeled else dataclasses.replace(b, image_u=None), it)
        opt.zero_grad()
        out.loss.backward()
        opt.step(scaler)
        method.after_optimizer_step(it)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for it in range(warmup):
        step(it)
    sync()
    t0 = time.perf_counter()
    for it in range(warmup, warmup + iters):
        step(it)
    sync()
    ms = 1000 * (time.perf_counter() - t0) / max(iters, 1)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = _rss_kib("VmHWM") if hwm else None
        peak = peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = max(peak - rss0, 0) / 1024
    return {"method": cls.name, "ms": ms, "peak_mb": peak_mb, "params": sum(p.numel() for g in
            method.param_groups() for p in g["params"])}  # fmt: skip


def _worker(args: tuple, queue: Any) -> None:
    try:
        queue.put(measure(*args))
    except Exception as exc:  # report the failure in the table instead of killing the whole run
        queue.put({"method": args[0], "error": f"{type(exc).__name__}: {exc}"})


def run(names: list[str], size: int, batch: int, iters: int, warmup: int, threads: int, device: str,
        plugins: tuple[str, ...] = ()) -> list[dict[str, Any]]:  # fmt: skip
    """Measure each method in its own spawned process; add ratios to the ``supervised`` row."""
    ctx = mp.get_context("spawn")
    rows = []
    for name in names:
        q = ctx.Queue()
        proc = ctx.Process(target=_worker, args=((name, size, batch, iters, warmup, threads, device, plugins), q))
        proc.start()
        rows.append(q.get())
        proc.join()
    return add_ratios(rows)


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``ms_ratio`` and ``mem_ratio`` of every row relative to the ``supervised`` row (none without one)."""
    ref = next((r for r in rows if r.get("method") == "supervised" and "error" not in r), None)
    for r in rows:
        if ref is not None and "error" not in r:
            r["ms_ratio"] = r["ms"] / ref["ms"]
            r["mem_ratio"] = r["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] > 0 else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | ms/iter | x supervised | peak MB | x supervised | trainable params |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} | | | | |")
            continue
        ms_ratio = f"{r['ms_ratio']:.2f}" if r.get("ms_ratio") is not None else "-"
        mem_ratio = f"{r['mem_ratio']:.2f}" if r.get("mem_ratio") is not None else "-"
        lines.append(
            f"| {r['method']} | {r['ms']:.0f} | {ms_ratio} | {r['peak_mb']:.0f} | {mem_ratio} | "
            f"{r['params'] / 1e6:.2f} M |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=None, help="subset of registered methods (default: every 2D one)")
    ap.add_argument("--size", type=int, default=128, help="image side (default 128, phantom2d's)")
    ap.add_argument("--batch", type=int, default=4, help="labeled and unlabeled images per batch each (default 4+4)")
    ap.add_argument("--iters", type=int, default=5, help="timed steps per method")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per method process (0 = default)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--plugin", action="append", default=[], help="import a method plug-in (module or .py file)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON")
    args = ap.parse_args(argv)

    import torch

    plugins = tuple(args.plugin)
    names = methods_2d(plugins) if args.methods is None else args.methods
    if "supervised" not in names:
        names = ["supervised", *names]
    print(f"preset={PRESET} size={args.size} batch={args.batch}+{args.batch} iters={args.iters} "
          f"warmup={args.warmup} threads={args.threads} device={args.device} torch={torch.__version__}")  # fmt: skip
    rows = run(names, args.size, args.batch, args.iters, args.warmup, args.threads, args.device, plugins)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
