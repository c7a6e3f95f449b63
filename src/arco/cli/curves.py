"""`arco curves RUN_DIR [--out PNG]`: plot the logged losses and validation Dice of a training run."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curves",
        help="plot losses and validation Dice of a run (PNG)",
        description="Render loss_sup, loss_contrast, loss_unsup, loss_nn, loss_inst (whichever were logged) "
        "and val_dice from RUN_DIR/log.csv against iteration.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding log.csv (or the log.csv itself)")
    p.add_argument("--out", help="output PNG (default: RUN_DIR/curves.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arco._checks import DataError, path_problem
    from arco._io import check_out_dir, read_text
    from arco.evaluation import plot_training_curves

    src = Path(args.run_dir)
    log_csv = src if src.is_file() else src / "log.csv"
    if not log_csv.is_file():
        where = f"{src} {path_problem(src)}" if not src.exists() else f"{log_csv} {path_problem(log_csv)}"
        raise FileNotFoundError(f"no training log: {where}; give a run folder written by `arco train`")
    read_text(log_csv, "training log", DataError, "give the log.csv that `arco train` wrote")  # binary: named
    out = Path(args.out) if args.out else log_csv.parent / "curves.png"
    if not out.name.lower().endswith(".png"):
        raise ValueError(f"--out must be a .png file, got {out}")
    check_out_dir(out.parent, "--out's folder")
    plot_training_curves(log_csv, out)
    print(f"wrote {out}")
    return 0
