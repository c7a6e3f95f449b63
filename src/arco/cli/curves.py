"""`arco curves RUN [--out PNG]`: plot the logged losses and validation Dice of a training run."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curves",
        help="plot losses and validation Dice of a run (PNG)",
        description="Render every logged loss (loss, loss_sup, loss_contrast, loss_unsup, ...) and val_dice of a "
        "run against iteration, each on its own panel with its own scale. RUN is a stage folder holding log.csv, "
        "a run folder holding stage folders (ARCO's pretrain and finetune, drawn one after the other), or a "
        "log.csv.",
    )
    p.add_argument("run_dir", metavar="RUN", help="stage folder, run folder of stage folders, or log.csv")
    p.add_argument("--out", help="output PNG (default: RUN/curves.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arco._checks import DataError, path_problem
    from arco._io import check_out_dir, read_text
    from arco.evaluation import plot_training_curves

    src = Path(args.run_dir)
    if not src.exists():
        fix = "give a run folder written by `arco train`"
        raise FileNotFoundError(f"no training log: {src} {path_problem(src)}; {fix}")
    if src.is_file():
        logs = [src]
    else:
        logs = [src / "log.csv"] if (src / "log.csv").is_file() else sorted(src.glob("*/log.csv"))
    if not logs:
        where = src / "log.csv"
        fix = "give a run folder written by `arco train`"
        raise FileNotFoundError(f"no training log: {where} {path_problem(where)}; {fix}")
    for log in logs:  # a binary or non-UTF-8 log is named
        read_text(log, "training log", DataError, "give the log.csv that `arco train` wrote")
    out = Path(args.out) if args.out else (src.parent if src.is_file() else src) / "curves.png"
    if not out.name.lower().endswith(".png"):
        raise ValueError(f"--out must be a .png file, got {out}")
    check_out_dir(out.parent, "--out's folder")
    plot_training_curves(src, out)
    print(f"wrote {out}")
    return 0
