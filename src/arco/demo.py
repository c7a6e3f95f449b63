"""The whole story on the built-in phantom, sized for a 2-core CPU: supervised baseline vs ARCO-SG.

Both methods see the same labeled subjects, the same network, the same number of supervised iterations (the
baseline trains ``pretrain.iterations + finetune.iterations`` steps, ARCO's two stages together as many), and
both are scored with their best-on-val checkpoint on the test split.
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
from arco.config import RunConfig, load_config, to_dict, train

__all__ = ["DEMO_PRESET", "demo_config", "run_demo", "evaluate_checkpoint", "format_table"]

logger = logging.getLogger(__name__)

DEMO_PRESET = "demo"


def demo_config(out: str | os.PathLike, fast: bool = False, overrides: tuple[str, ...] = ()) -> RunConfig:
    """The ``demo`` preset with its data under ``out/data``; ``fast`` divides every schedule by 4 (smoke
    test).
    """
    cfg = load_config(DEMO_PRESET, (f"data.root={Path(out) / 'data'}", *overrides))
    if fast:
        cfg = replace(
            cfg,
            pretrain=replace(cfg.pretrain, iterations=max(cfg.pretrain.iterations // 4, 1)),
            finetune=replace(cfg.finetune, iterations=max(cfg.finetune.iterations // 4, 1)),
            supervised=replace(cfg.supervised, iterations=max(cfg.supervised.iterations // 4, 1)),
            engine=replace(cfg.engine, val_every=max(cfg.engine.val_every // 4, 1)),
        )
    return cfg


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
    import torch

    from arco.checkpoint import load_predictor
    from arco.engine import resolve_device
    from arco.evaluation.report import evaluate

    device = resolve_device(cfg.engine.device)
    model, _ = load_predictor(ckpt, map_location=device)
    model.to(device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return model(x.to(device)).logits

    with torch.no_grad():
        result = evaluate(
            predict,
            data.test,
            data.num_classes,
            data.spatial_dims,
            data.patch_size,
            class_names=data.class_names,
            compat=cfg.eval.compat,
            out_dir=out_dir,
            device=str(device),
        )
    return _scores(result)


def _train_job(cfg: RunConfig, out: Path, stages: tuple[str, ...], data: Any = None) -> float:
    """Train ``stages`` into ``out`` (builds the data when ``data`` is None); returns the seconds taken."""
    import torch

    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)
    t = time.perf_counter()
    train(cfg, out, stages=stages, data=data)
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

    t0 = time.perf_counter()
    out = Path(out)
    cfg = demo_config(out, fast, overrides)
    if cfg.engine.threads > 0:
        torch.set_num_threads(cfg.engine.threads)
    data = build_data(cfg.data)  # generates the phantom once, before the workers start
    sup_cfg = replace(
        cfg, supervised=replace(cfg.supervised, iterations=cfg.pretrain.iterations + cfg.finetune.iterations)
    )
    jobs = {
        "supervised": (sup_cfg, out / "supervised", ("supervised",)),
        "arco": (cfg, out / "arco", ("pretrain", "finetune")),
    }
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
    for name, ckpt in (
        ("supervised", out / "supervised" / "supervised"),
        ("arco", out / "arco" / "finetune"),
    ):
        results[name] = evaluate_checkpoint(ckpt, data, cfg, out / "evaluation" / name)
    summary: dict[str, Any] = {
        **results,
        "test_cases": [v.case_id for v in data.test],
        "labeled": data.split.get("labeled"),
        "iterations": {
            "supervised": sup_cfg.supervised.iterations,
            "pretrain": cfg.pretrain.iterations,
            "finetune": cfg.finetune.iterations,
        },
        "train_seconds": {k: round(v, 1) for k, v in timings.items()},
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "config": to_dict(cfg),
    }
    summary["table"] = format_table(summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary
