"""`arco train`: train any registered method (or ARCO's two stages) from a preset or YAML config."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EPILOG = """examples:
  arco train --list-methods                                         # every method, with its paper
  arco train --config phantom2d --out runs/p2d                      # the preset's stages (ARCO: pretrain, finetune)
  arco train --config phantom2d --method supervised --out runs/sup  # any method on the preset's data and budget
  arco train --config phantom2d --method arco-ns --out runs/ns      # ARCO with the NS sampler (MONA's)
  arco train --config phantom2d --set finetune.sampler=sag --set finetune.iterations=500 --out runs/sag
  arco train --config acdc --set data.root=data/ACDC --out runs/acdc
  arco train --config phantom2d --out runs/p2d --resume             # continue from checkpoints/last.pt
  arco train --config my.yaml --plugin my_method.py --method my-method --iterations 20   # a method of your own
  arco train --config acdc --set data.root=data/ACDC --nproc 4 --out runs/acdc4      # DDP on 4 GPUs (or CPU procs)
  torchrun --nproc_per_node=4 -m arco train --config acdc --out runs/acdc4          # the same, launched by torchrun

--set KEY=VALUE: KEY is section.key (data, model, optim, schedule, engine, eval), budget, or stage.key, where
stage.key is the stage's schedule (iterations, batch_labeled, batch_unlabeled, lr, lr_schedule, ...) or a parameter
of its method (e.g. finetune.sampler, finetune.lambda_unsup); stage.schedule.KEY / stage.params.KEY say which.
Values are YAML. iterations is always one stage's length; schedule.* are the defaults of every stage.

DDP (--nproc N or torchrun): the stages' batch sizes are GLOBAL; each process trains on batch / N (an error when N
does not divide it). Only rank 0 writes. engine.sync_bn=true synchronises BatchNorm across processes.
"""


PRINT_HEADER = """\
# The resolved config (arco train --print-config); `arco train --config THIS_FILE` trains it as it is.
# stages: what is trained, in order. Each stage trains its `method` with its own, complete `schedule` (iterations is
#   that stage's length) and `params` (the method's parameters), starting from `init`.
# schedule: only the defaults each stage's schedule started from. budget: a run's length that recipe stages without
#   iterations of their own share (null: none). method: the recipe the stages came from, for the record.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a method (ARCO's two stages, the supervised baseline, or any registered method)",
        description="Train on a dataset given by a config preset or YAML file. Each stage writes its own folder "
        "RUN/<stage> with config.yaml, split.json, log.csv, checkpoints/{last,best}.pt, summary.json and curves.png.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", default="phantom2d", help="preset name (see --list-presets) or YAML path")
    p.add_argument("--method", "-m", default=None, help="train this method or recipe instead of the config's stages")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. finetune.sampler=sag or data.patch_size=[96,96] (repeatable)",
    )
    p.add_argument("--iterations", type=int, default=None, help="set every stage's length (smoke runs, comparisons)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE", help="import a method plug-in")
    p.add_argument("--stage", default=None, help="run only this stage of the run (e.g. finetune, with --init)")
    p.add_argument("--out", "-o", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue each stage from RUN/<stage>/checkpoints/last.pt")
    p.add_argument("--init", default=None, metavar="CKPT", help="initialise the first stage run from this checkpoint")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="train with DDP on N processes of this machine (one per GPU on CUDA, else CPU processes with gloo): "
        "re-launches this command with torchrun",
    )
    p.add_argument("--list-presets", action="store_true", help="print the built-in presets and exit")
    p.add_argument("--list-methods", action="store_true", help="print every method with its paper and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def list_methods() -> str:
    """One line per entry of the method registry that ``--method`` trains, then the methods that serve only as
    stages of the multi-stage recipes above them."""
    import textwrap

    from arco.methods import get_recipe, list_methods

    entries = [get_recipe(n) for n in list_methods()]
    in_recipes = {s.method for e in entries if len(e.stages) > 1 for s in e.stages}
    lines = ["Methods (arco train --method NAME):"]
    width = max(len(e.name) for e in entries) + 2
    for e in entries:
        if e.name in in_recipes:
            continue
        stages = " -> ".join(s.method for s in e.stages)
        what = e.description if len(e.stages) == 1 else f"{e.description} [{stages}]"
        lines.append(f"  {e.name:<{width}}{what}")
        lines.append(textwrap.indent(textwrap.fill(e.paper, 100), " " * (width + 4)))
    stage_only = [e for e in entries if e.name in in_recipes]
    if stage_only:
        lines.append("Stages of the multi-stage methods above (also trainable alone with --method):")
        for e in stage_only:
            lines.append(f"  {e.name:<{width}}{e.description}")
    return "\n".join(lines)


def _check_global_batches(cfg: Any, only: tuple[str, ...] | None, nproc: int) -> None:
    """Fail before launching when ``nproc`` does not divide a stage's global batch."""
    from arco.engine.distributed import per_rank_batch
    from arco.methods import get_method

    for stage in cfg.stages:
        if only and stage.name not in only:
            continue
        per_rank_batch(stage.name, "batch_labeled", stage.schedule.batch_labeled, nproc)
        if get_method(stage.method).needs_unlabeled:
            per_rank_batch(stage.name, "batch_unlabeled", stage.schedule.batch_unlabeled, nproc)


def _train_ranks(cfg: Any, out: Any, only: tuple[str, ...] | None, args: argparse.Namespace) -> dict | None:
    """One rank of a torchrun launch: join the process group, train, leave. Returns the results on rank 0."""
    import logging

    import torch.distributed as dist

    from arco.engine.distributed import init_process_group
    from arco.pipeline import train

    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    init_process_group(cfg.engine.device, int(os.environ.get("LOCAL_RANK", "0")))
    try:
        results = train(cfg, out, only=only, resume=args.resume, init_from=args.init)
    finally:
        dist.destroy_process_group()
    return results if rank == 0 else None


def _train_or_tidy(cfg: Any, out: Any, only: tuple[str, ...] | None, args: argparse.Namespace) -> dict:
    """``pipeline.train``; when it fails before writing anything, the run folder this call created (holding only
    its lock file) is removed again, so bad data or config leaves no empty run behind."""
    from arco._lock import LOCK_NAME
    from arco.pipeline import train

    new = not out.exists()
    try:
        return train(cfg, out, only=only, resume=args.resume, init_from=args.init)
    except Exception:
        if new and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK_NAME}:
            (out / LOCK_NAME).unlink(missing_ok=True)
            out.rmdir()
        raise


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from arco._io import check_out_dir
    from arco.config import load_config, presets, to_dict

    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1 (the number of training processes), got {args.nproc}")
    if args.list_presets:
        print("\n".join(presets()))
        return 0
    if args.list_methods:
        from arco.methods import load_plugins

        load_plugins(args.plugin)
        print(list_methods())
        return 0
    cfg = load_config(
        args.config, args.overrides, method=args.method, iterations=args.iterations, plugins=tuple(args.plugin)
    )
    if args.print_config:
        print(PRINT_HEADER + yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    out = Path(args.out) if args.out else Path("runs") / Path(str(args.config)).stem
    check_out_dir(out)
    only = (args.stage,) if args.stage else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.nproc > 1 and world == 1:
        from arco.cli._launch import relaunch

        _check_global_batches(cfg, only, args.nproc)
        return relaunch(list(getattr(args, "argv", sys.argv[1:])), args.nproc)
    if world == 1:
        results = _train_or_tidy(cfg, out, only, args)
    else:
        results = _train_ranks(cfg, out, only, args)
        if results is None:
            return 0
    for stage, s in results.items():
        best = s.get("best_val_dice")
        best_text = "n/a (no val split)" if best is None else f"{best:.4f} @ {s.get('best_iteration')}"
        print(
            f"{stage}: {s['completed_iterations']}/{s['iterations']} iterations in {s['wall_seconds']:.0f} s, "
            f"best val Dice {best_text}; checkpoint {s['checkpoints']['best']}"
        )
    return 0
