"""The whole story on the built-in phantom, sized for a 2-core CPU: supervised baseline vs ARCO-SG.

Both methods see the same labeled subjects, the same network and the same iteration budget (the baseline trains
``schedule.iterations`` steps, ARCO's two stages together as many), and both are scored with their best-on-val
checkpoint on the test split.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text
from arco.config import SECTIONS, RunConfig, load_config, to_dict
from arco.pipeline import evaluate_test, train

__all__ = ["DEMO_PRESET", "demo_config", "run_demo", "evaluate_checkpoint", "format_table"]

logger = logging.getLogger(__name__)

DEMO_PRESET = "demo"


def _shorten(cfg: RunConfig, factor: int) -> RunConfig:
    stages = tuple(
        replace(s, schedule=replace(s.schedule, iterations=max(s.schedule.iterations // factor, 1))) for s in cfg.stages
    )
    return replace(cfg, stages=stages, engine=replace(cfg.engine, val_every=max(cfg.engine.val_every // factor, 1)))


def demo_config(
    out: str | os.PathLike, fast: bool = False, overrides: tuple[str, ...] = (), method: str | None = None
) -> RunConfig:
    """The ``demo`` preset (as recipe ``method``, default ARCO) with its data under ``out/data``; ``fast`` divides
    every schedule by 4 (smoke test). Overrides of stages this run does not have (``finetune.*`` for the supervised
    run) are left out."""
    stages = {s.name for s in load_config(DEMO_PRESET, method=method).stages}
    mine = [o for o in overrides if o.split("=", 1)[0].split(".")[0] in (*SECTIONS, *stages)]
    cfg = load_config(DEMO_PRESET, (f"data.root={Path(out) / 'data'}", *mine), method=method)
    return _shorten(cfg, 4) if fast else cfg


def _scores(result: Any) -> dict[str, Any]:
    s = result.summary
    return {
        "dice": s["mean"]["dice"],
        "asd": s["mean"]["asd"],
        "hd95": s["mean"]["hd95"],
        "per_class": {name: {m: e["mean"][m] for m in ("dice", "asd", "hd95")} for name, e in s["per_class"].items()},
    }


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table of per-class test Dice/ASD for both methods and the difference (ARCO - supervised)."""
    sup, arco = summary["supervised"], summary["arco"]
    lines = [
        "| class | Dice supervised | Dice ARCO-SG | Δ Dice | ASD supervised | ASD ARCO-SG | Δ ASD |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [(n, sup["per_class"][n], arco["per_class"][n]) for n in sup["per_class"]]
    rows.append(("mean", sup, arco))
    for name, a, b in rows:
        lines.append(
            f"| {name} | {a['dice']:.4f} | {b['dice']:.4f} | {b['dice'] - a['dice']:+.4f} | "
            f"{a['asd']:.2f} | {b['asd']:.2f} | {b['asd'] - a['asd']:+.2f} |"
        )
    return "\n".join(lines)


def evaluate_checkpoint(ckpt: str | os.PathLike, data: Any, cfg: RunConfig, out_dir: Any = None) -> dict[str, Any]:
    """Score a run's best checkpoint on ``data.test``; returns mean and per-class Dice/ASD/HD95."""
    result = evaluate_test(ckpt, data, cfg, out_dir)
    return _scores(result)


def _train_job(cfg: RunConfig, out: Path, data: Any = None) -> float:
    """Train the run ``cfg`` into ``out`` (builds the data when ``data`` is None); returns the seconds taken."""
    import torch

    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)
    t = time.perf_counter()
    train(cfg, out, data=data)
    return time.perf_counter() - t


def run_demo(
    out: str | os.PathLike = "arco-demo",
    fast: bool = False,
    overrides: tuple[str, ...] = (),
    parallel: bool = True,
) -> dict[str, Any]:
    """Generate the phantom (if absent), train both methods, evaluate them on the test split and write
    ``out/summary.json``.

    With ``parallel`` the two methods train at the same time in two worker processes (one CPU thread each).

    Returns:
        ``{"supervised": {"dice", "asd", "hd95", "per_class"}, "arco": {...}, "wall_seconds", ...}``;
        ``summary["table"]`` is the Markdown comparison table.
    """
    import torch

    from arco.data import build_data
    from arco.data.phantom import PHANTOMS, ensure_phantom

    t0 = time.perf_counter()
    out = Path(out)
    cfg = demo_config(out, fast, overrides)
    sup_cfg = demo_config(out, fast, overrides, method="supervised")
    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)
    d = cfg.data  # the demo generates its phantom explicitly, once, before the workers start
    if d.dataset in PHANTOMS:
        ensure_phantom(d.root, d.dataset, True, d.subjects, d.seed, d.image_size)
    data = build_data(d)
    jobs = {"supervised": (sup_cfg, out / "supervised"), "arco": (cfg, out / "arco")}
    timings: dict[str, float] = {}
    if parallel:
        # One process per method, one torch thread each: both cores busy, and no OpenMP spinning when the
        # machine is shared (two threads per process degrade badly under contention).
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
            futures = {name: pool.submit(_train_job, *job) for name, job in jobs.items()}
            for name, fut in futures.items():
                timings[name] = fut.result()
    else:
        for name, job in jobs.items():
            timings[name] = _train_job(*job, data=data)

    results: dict[str, Any] = {}
    for name, (run_cfg, run_out) in jobs.items():
        ckpt = run_out / run_cfg.stages[-1].name
        results[name] = evaluate_checkpoint(ckpt, data, run_cfg, out / "evaluation" / name)
    summary: dict[str, Any] = {
        **results,
        "test_cases": [v.case_id for v in data.test],
        "labeled": data.split.get("labeled"),
        "iterations": {
            **{s.name: s.schedule.iterations for s in sup_cfg.stages},
            **{s.name: s.schedule.iterations for s in cfg.stages},
        },
        "train_seconds": {k: round(v, 1) for k, v in timings.items()},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "config": to_dict(cfg),
    }
    summary["table"] = format_table(summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
