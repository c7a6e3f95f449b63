"""Time ``arco.sampling.sample`` for NS, SG and SAG (median of repeats, ratios measured in the same process).

Usage: ``python benchmarks/bench_sampling.py [--repeats 31] [--threads N] [--device cpu|cuda]``.
Cases: anchor-sized draws (mask 8x256x256 with ~5/20/50 % candidates, num=256, grid 4) and large draws
(num=20000 from ~100000 candidates). Targets on a 2-core CPU: SG, SAG <= 2x NS (anchor), <= 4x NS (large).
The strategies are interleaved inside every repeat so load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from arco.sampling import sample

__all__ = ["bench", "main"]

CASES = (
    ("anchor 5%", 0.05, 256),
    ("anchor 20%", 0.20, 256),
    ("anchor 50%", 0.50, 256),
    ("large 100k", 100_000 / (8 * 256 * 256), 20_000),
)
STRATEGIES = ("ns", "sg", "sag")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(device: torch.device, repeats: int, grid: int = 4) -> list[dict]:
    """Median wall time (ms) of one ``sample`` call per case and strategy on ``device``."""
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for name, frac, num in CASES:
        mask = torch.rand(8, 256, 256, generator=gen, device=device) < frac
        times: dict[str, list[float]] = {s: [] for s in STRATEGIES}
        for _ in range(3):  # warm-up: caches, allocator
            for s in STRATEGIES:
                sample(mask, num, s, grid, gen)
        for _ in range(repeats):
            for s in STRATEGIES:
                _sync(device)
                t0 = time.perf_counter()
                sample(mask, num, s, grid, gen)
                _sync(device)
                times[s].append(time.perf_counter() - t0)
        med = {s: 1e3 * statistics.median(v) for s, v in times.items()}
        rows.append(
            {"device": device.type, "case": name, "candidates": int(mask.sum()), "num": num, **med}
            | {"sg/ns": med["sg"] / med["ns"], "sag/ns": med["sag"] / med["ns"]}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), action="append", help="default: cpu (+ cuda)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} (ms)")
    print(f"{'device':6} {'case':11} {'cands':>7} {'num':>6} {'ns':>8} {'sg':>8} {'sag':>8} {'sg/ns':>6} {'sag/ns':>6}")
    for dev in devices:
        for r in bench(torch.device(dev), args.repeats):
            print(
                f"{r['device']:6} {r['case']:11} {r['candidates']:7d} {r['num']:6d} {r['ns']:8.2f} "
                f"{r['sg']:8.2f} {r['sag']:8.2f} {r['sg/ns']:6.2f} {r['sag/ns']:6.2f}"
            )


if __name__ == "__main__":
    main()
