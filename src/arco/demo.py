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

__all__ = [
    "DEMO_PRESET",
    "METHOD_NAMES",
    "demo_config",
    "run_demo",
    "evaluate_checkpoint",
    "format_table",
    "training_progress",
    "write_demo_report",
]

logger = logging.getLogger(__name__)

DEMO_PRESET = "demo"
#: The demo's two runs as the report names them.
METHOD_NAMES = {"supervised": "supervised", "arco": "ARCO-SG"}


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


def _logged_iteration(log_csv: Path) -> int:
    """The iteration of the last complete row of a training log (0 before the first row)."""
    try:
        text = log_csv.read_text()
    except FileNotFoundError:
        return 0
    lines = [ln for ln in text.split("\n")[1:-1] if ln]  # the last element is a row still being written
    head = lines[-1].split(",", 1)[0] if lines else ""
    return int(head) if head.isdigit() else 0


def training_progress(jobs: dict[str, tuple[RunConfig, Path]]) -> dict[str, dict[str, Any]]:
    """Per run: iterations done and planned over all its stages and the stage in progress, read from the runs'
    ``log.csv`` files (what the parent process can see of trainings in worker processes)."""
    out = {}
    for name, (cfg, folder) in jobs.items():
        done, total, current = 0, 0, None
        for stage in cfg.stages:
            n = stage.schedule.iterations
            finished = (folder / stage.name / "summary.json").is_file()
            it = n if finished else min(_logged_iteration(folder / stage.name / "log.csv"), n)
            done, total = done + it, total + n
            if current is None and it < n:
                current = stage.name
        out[name] = {"done": done, "total": total, "stage": current or "done"}
    return out


def _train_parallel(jobs: dict[str, tuple[RunConfig, Path]], progress: Any) -> dict[str, float]:
    """One process per method, one torch thread each: both cores busy, and no OpenMP spinning when the machine is
    shared (two threads per process degrade badly under contention). The workers draw no progress bars (two
    processes writing bars to one terminal interleave them); ``progress`` gets :func:`training_progress` every
    second instead."""
    from concurrent.futures import FIRST_EXCEPTION, wait

    quiet = {name: (replace(cfg, engine=replace(cfg.engine, progress=False)), folder)
             for name, (cfg, folder) in jobs.items()}  # fmt: skip
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=ctx) as pool:
        futures = {name: pool.submit(_train_job, *job) for name, job in quiet.items()}
        pending = set(futures.values())
        while pending:
            _, pending = wait(pending, timeout=1.0, return_when=FIRST_EXCEPTION)
            if progress is not None:
                progress(training_progress(jobs))
            if any(f.done() and f.exception() is not None for f in futures.values()):
                break
        return {name: fut.result() for name, fut in futures.items()}


def run_demo(
    out: str | os.PathLike = "arco-demo",
    fast: bool = False,
    overrides: tuple[str, ...] = (),
    parallel: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """Generate the phantom (if absent), train both methods, evaluate them on the test split and write
    ``out/summary.json`` and ``out/report.html``.

    With ``parallel`` the two methods train at the same time in two worker processes (one CPU thread each), and
    ``progress`` (if given) is called about once a second with :func:`training_progress`; without it each
    training draws its own progress bar, one after the other.

    Returns:
        ``{"supervised": {"dice", "asd", "hd95", "per_class"}, "arco": {...}, "wall_seconds", "report", ...}``;
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
    if parallel:
        timings = _train_parallel(jobs, progress)
    else:
        timings = {name: _train_job(*job, data=data) for name, job in jobs.items()}

    results: dict[str, Any] = {}
    for name, (run_cfg, run_out) in jobs.items():
        ckpt = run_out / run_cfg.stages[-1].name
        meta = {
            "title": f"Demo: evaluation of {METHOD_NAMES[name]}",
            "source": [("run", str(ckpt)), ("split", "test")],
            "config": to_dict(run_cfg),
        }
        results[name] = evaluate_test(ckpt, data, run_cfg, out / "evaluation" / name, report_meta=meta)
    summary: dict[str, Any] = {
        **{name: _scores(r) for name, r in results.items()},
        "test_cases": [v.case_id for v in data.test],
        "labeled": data.split.get("labeled"),
        "iterations": {
            **{s.name: s.schedule.iterations for s in sup_cfg.stages},
            **{s.name: s.schedule.iterations for s in cfg.stages},
        },
        "train_seconds": {k: round(v, 1) for k, v in timings.items()},
        "config": to_dict(cfg),
    }
    summary["table"] = format_table(summary)
    summary["report"] = str(out / "report.html")
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)  # before the report: the training and scoring
    write_demo_report(summary, jobs, results, data, out)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def write_demo_report(summary: dict[str, Any], jobs: dict[str, tuple[RunConfig, Path]], results: dict[str, Any],
                      data: Any, out: Path) -> Path:  # fmt: skip
    """``out/report.html``: the demo's table and timings, then the comparison of the two runs
    (:mod:`arco.compare`: per-case table, qualitative panel, curves on shared axes, overlays, configurations)."""
    from arco._device import resolve_device
    from arco.checkpoint import resolve_checkpoint
    from arco.compare import ComparedRun, case_mean_dice, write_comparison

    compared = []
    for name, (run_cfg, run_out) in jobs.items():
        stage = run_out / run_cfg.stages[-1].name
        run = ComparedRun(METHOD_NAMES[name], resolve_checkpoint(stage), run_out if len(run_cfg.stages) > 1 else stage)
        run.result, run.case_dice, run.config = results[name], case_mean_dice(results[name].rows), to_dict(run_cfg)
        compared.append(run)

    def intro(page: Any) -> None:
        page.heading("The demo")
        page.paragraph(
            "The supervised baseline (UNet-L) and ARCO-SG (stage 1 + stage 2) trained on the same labeled subjects "
            "of the built-in phantom with the same network and iteration budget, each scored on the test split "
            "with its best-on-validation checkpoint."
        )
        page.meta(
            [
                ("labeled subjects", ", ".join(summary["labeled"] or [])),
                ("test cases", ", ".join(summary["test_cases"])),
                ("iterations", ", ".join(f"{k} {v}" for k, v in summary["iterations"].items())),
                ("training seconds", ", ".join(f"{METHOD_NAMES[k]} {v}" for k, v in summary["train_seconds"].items())),
                ("wall time (training and scoring)", f"{summary['wall_seconds']:.0f} s"),
            ]
        )
        sup, arco = summary["supervised"], summary["arco"]
        rows = [(n, sup["per_class"][n], arco["per_class"][n]) for n in sup["per_class"]] + [("mean", sup, arco)]
        page.table(
            ["class", "Dice supervised", "Dice ARCO-SG", "Δ Dice", "ASD supervised", "ASD ARCO-SG", "Δ ASD"],
            [[n, a["dice"], b["dice"], f"{b['dice'] - a['dice']:+.4f}", f"{a['asd']:.2f}", f"{b['asd']:.2f}",
              f"{b['asd'] - a['asd']:+.2f}"] for n, a, b in rows],
        )  # fmt: skip

    write_comparison(
        compared, list(data.test), data, out, str(resolve_device(jobs["arco"][0].engine.device)),
        jobs["arco"][0].engine.val_batch, "test", title="arco demo: supervised vs ARCO-SG", intro=intro,
        curves=("val_dice", "loss_sup", "loss_contrast", "loss_unsup", "loss_nn"),
    )  # fmt: skip
    return out / "report.html"
