"""Cost of the stage-2 pixel contrastive loss (L_contrast incl. the representation head at sampled pixels),
new forms versus the previous implementation, measured in the same run.

Variants: ``dense``/``sampled``/``auto`` (the forms of ``pixel_contrastive_loss``, the ``batch`` loss; default:
dense and auto), with ARCO's fused representation at the sampled pixels. Each variant runs in a fresh process (peak
RSS is per variant). (The ``reference`` loss's cost is measured by bench_step.py.)

    python benchmarks/bench_contrastive.py                      # the issue's CPU shapes, 2 threads
    python benchmarks/bench_contrastive.py --step               # also whole stage-2 steps and the L_contrast share
    python benchmarks/bench_contrastive.py --crossover          # dense vs sampled per table size (SAMPLED_ABOVE)
    python benchmarks/bench_contrastive.py --json               # one JSON object per measurement

Loss timings: ``PixelContrastiveLoss.forward`` + backward into the (detached) decoder features, with a full
bank. Step timings: ``training_step`` + backward + SGD + ``after_optimizer_step`` of ``ArcoFinetuneMethod``; the
share of L_contrast is given as bench_step.py defines it (its forward only, timed around the call) and as the
whole cost (step time minus the step time with L_contrast replaced by a constant, measured in the same process).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

VARIANTS = ("dense", "sampled", "auto")


def _use_variant(variant: str, loss: Any) -> None:
    """Select the form of the loss."""
    loss.form = variant


def _labels(b: int, size: int, generator: Any) -> Any:
    """Phantom-like label maps: three nested blobs (classes 1-3) at random centres on background 0."""
    import torch

    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = size * (0.35 + 0.3 * torch.rand(b, 2, generator=generator))
    r = torch.sqrt((yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2) / size
    return torch.where(r < 0.08, 3, torch.where(r < 0.13, 2, torch.where(r < 0.2, 1, 0))).long()


def _fill_bank(loss: Any, generator: Any) -> None:
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        loss.bank.copy_(F.normalize(torch.randn(loss.bank.shape, generator=generator), dim=-1))
        loss.bank_valid[:, : loss.bank_size] = True


def _timed(fns: dict[str, Any], iters: int) -> dict[str, dict[str, float]]:
    """Median wall and process-CPU ms per call; several functions alternate call by call, so a change in the
    load of a shared machine hits them alike (CPU time is the steadier figure when other processes compete)."""
    for fn in fns.values():
        fn()  # warm-up
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):
        for k, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(1000 * (time.perf_counter() - t))
            cpu[k].append(1000 * (time.process_time() - c))
    return {k: {"ms": statistics.median(wall[k]), "cpu_ms": statistics.median(cpu[k])} for k in fns}


def _measure_loss(variant: str, a: dict[str, Any]) -> dict[str, Any]:
    """L_contrast forward + backward, incl. sampling and the student/teacher head at the draws."""
    import torch

    from arco.losses import PixelContrastiveLoss
    from arco.models import MODELS, FusedRepresentation, make_teacher

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    b, s, c = 2 * a["batch"], a["size"], 4
    net = MODELS.build("unet", in_channels=1, num_classes=c)
    label = _labels(b, s, g)
    with torch.no_grad():
        out = net(label.float()[:, None] / 3)
        feats = [f.detach().requires_grad_(True) for f in (out.bottleneck, *out.features)]
    head = FusedRepresentation([net.bottleneck_channels, *net.feature_channels], a["dim"]).train()
    teacher = make_teacher(head)
    fn = PixelContrastiveLoss(c, a["dim"], num_queries=a["queries"], num_negatives=a["negatives"], bank_size=a["bank"])
    _fill_bank(fn, g)
    _use_variant(variant, fn)

    def step() -> None:
        loss = fn(
            label,
            None,
            lambda i: head.forward_at(feats, i),
            lambda i: teacher.forward_at(feats, i),
            g,
        )
        loss.backward()

    return {"what": "loss", "variant": variant, **_timed({"loss": step}, a["iters"])["loss"]}


def _measure_step(variant: str, a: dict[str, Any]) -> dict[str, Any]:
    """Whole stage-2 steps; the L_contrast share by bench_step's definition and by difference."""
    import torch

    from arco.methods import Batch, ModelConfig
    from arco.methods.arco import ArcoFinetuneConfig, ArcoFinetuneMethod

    cfg = ArcoFinetuneConfig(
        contrast="batch", sampler="sg", num_queries=a["queries"], num_negatives=a["negatives"], bank_size=a["bank"],
        confidence=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    m = ArcoFinetuneMethod(cfg, 4, 2, ModelConfig(arch="unet", dim=a["dim"], hidden_dim=a["dim"]))
    m.setup(torch.device("cpu"), 0)
    m.train(True)
    g = torch.Generator().manual_seed(0)
    _fill_bank(m.contrast, g)
    _use_variant(variant, m.contrast)
    opt = torch.optim.SGD(m.param_groups(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    s, bl = a["size"], a["batch"]
    lab = _labels(bl, s, g)
    image = (lab.float()[:, None] / 3 + 0.1 * torch.randn(bl, 1, s, s, generator=g),)
    unl = _labels(bl, s, g).float()[:, None] / 3 + 0.1 * torch.randn(bl, 1, s, s, generator=g)
    batch = Batch(image[0], lab, unl)
    forward_ms = []
    original = type(m.contrast).forward
    contrast = {"on": True}

    def forward(self: Any, *args: Any, **kw: Any) -> Any:
        if not contrast["on"]:  # the floor: the same step with L_contrast replaced by a constant
            return torch.zeros(())
        t = time.perf_counter()
        out = original(self, *args, **kw)
        forward_ms.append(1000 * (time.perf_counter() - t))
        return out

    def one(on: bool) -> None:
        contrast["on"] = on
        out = m.training_step(batch, 0)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        m.after_optimizer_step(0)

    type(m.contrast).forward = forward
    # The floor first and not interleaved: a step of the old loss frees and re-faults a gigabyte, which would
    # be billed to the step after it.
    floor = _timed({"without": lambda: one(False)}, a["iters"])["without"]
    full = _timed({"full": lambda: one(True)}, a["iters"])["full"]
    type(m.contrast).forward = original
    return {
        "what": "step",
        "variant": variant,
        "ms": full["ms"],
        "cpu_ms": full["cpu_ms"],
        "ms_without_contrast": floor["ms"],
        "cpu_ms_without_contrast": floor["cpu_ms"],
        "contrast_share": (full["ms"] - floor["ms"]) / full["ms"],
        "contrast_share_cpu": (full["cpu_ms"] - floor["cpu_ms"]) / full["cpu_ms"],
        "contrast_forward_share": statistics.median(forward_ms[1:]) / full["ms"],
    }


def _measure_crossover(rows_per_negative: float, a: dict[str, Any]) -> dict[str, Any]:
    """One key table of ``rows_per_negative * negatives`` rows read by 4 x queries queries with ``negatives``
    draws each: the dense and the sampled routine (forward + backward), the per-table choice "auto" makes."""
    import torch
    import torch.nn.functional as F

    from arco.losses.contrastive import _table_similarities

    g = torch.Generator().manual_seed(0)
    m, n, d = 4 * a["queries"], a["negatives"], a["dim"]
    r = max(1, round(rows_per_negative * n))
    query = F.normalize(torch.randn(m, d, generator=g), dim=-1).requires_grad_(True)
    table = F.normalize(torch.randn(r, d, generator=g), dim=-1)
    rows = torch.randint(0, r, (m, n), generator=g)
    up = torch.randn(m, n, generator=g)
    t = _timed(
        {
            form: (lambda form=form: (_table_similarities(query, table, rows, form) * up).sum().backward())
            for form in ("dense", "sampled")
        },
        a["iters"],
    )
    row: dict[str, Any] = {"what": "crossover", "rows_per_negative": rows_per_negative, "table_rows": r}
    for form, v in t.items():
        row[f"{form}_ms"], row[f"{form}_cpu_ms"] = v["ms"], v["cpu_ms"]
    return row


def _worker(kind: str, arg: Any, a: dict[str, Any], queue: Any) -> None:
    import resource

    import torch

    torch.set_num_threads(a["threads"])
    fn = {"loss": _measure_loss, "step": _measure_step, "crossover": _measure_crossover}[kind]
    out = fn(arg, a)
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(out)


def _run(kind: str, arg: Any, a: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(kind, arg, a, q))
    p.start()
    p.join()  # the result is a small dict: the queue does not fill up
    if p.exitcode != 0:
        raise SystemExit(f"bench_contrastive: the {kind} worker for {arg!r} failed (exit code {p.exitcode})")
    return q.get(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2, help="labeled images (as many unlabeled)")
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--negatives", type=int, default=512)
    ap.add_argument("--bank", type=int, default=30000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["dense", "auto"], choices=VARIANTS)
    ap.add_argument("--step", action="store_true", help="also time whole stage-2 steps")
    ap.add_argument(
        "--crossover", nargs="*", type=float, help="table rows per negative for dense vs sampled (no other runs)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    a = vars(args)
    load = [os.getloadavg()[0]]
    results = []
    if args.crossover is not None:
        for ratio in args.crossover or [1, 2, 4, 8, 16, 32]:
            results.append(_run("crossover", ratio, a))
    else:
        for kind in ("loss", "step") if args.step else ("loss",):
            for variant in args.variants:
                results.append(_run(kind, variant, a))
    load.append(os.getloadavg()[0])
    for r in results:
        r["load_avg"] = load
    if args.json:
        for r in results:
            print(json.dumps(r))
        return
    shape = {k: a[k] for k in ("size", "batch", "queries", "negatives", "bank", "dim", "threads", "iters")}
    print(f"shapes: {shape}; load average {load[0]:.1f} -> {load[1]:.1f} (ms: median wall; cpu: process CPU)")
    for r in results:
        print(_line(r, results))


def _line(r: dict[str, Any], results: list[dict[str, Any]]) -> str:
    if r["what"] == "crossover":
        return (
            f"table {r['table_rows']:>6} rows ({r['rows_per_negative']:g} per negative): dense {r['dense_ms']:.1f} ms "
            f"(cpu {r['dense_cpu_ms']:.0f}), sampled {r['sampled_ms']:.1f} ms (cpu {r['sampled_cpu_ms']:.0f}), "
            f"dense/sampled {r['dense_ms'] / r['sampled_ms']:.2f} (cpu {r['dense_cpu_ms'] / r['sampled_cpu_ms']:.2f})"
        )
    base = next((o for o in results if o["what"] == r["what"] and o["variant"] == "dense"), None)
    ratio = f", dense/this {base['ms'] / r['ms']:.1f}x (cpu {base['cpu_ms'] / r['cpu_ms']:.1f}x)" if base else ""
    extra = ""
    if r["what"] == "step":
        extra = (
            f"; without L_contrast {r['ms_without_contrast']:.0f} ms; L_contrast share "
            f"{100 * r['contrast_share']:.1f} % (cpu {100 * r['contrast_share_cpu']:.1f} %, forward only "
            f"{100 * r['contrast_forward_share']:.1f} %)"
        )
    head = f"{r['what']:>4} {r['variant']:>7}: {r['ms']:.0f} ms (cpu {r['cpu_ms']:.0f})"
    return f"{head}{ratio}, peak {r['peak_mb']:.0f} MB{extra}"


if __name__ == "__main__":
    main()
