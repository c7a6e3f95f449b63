"""`arco train`: run the ARCO stages (or the supervised baseline) from a preset or YAML config."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  arco train --config phantom2d --out runs/p2d                      # stage 1 then stage 2
  arco train --config acdc --set data.root=data/ACDC --set finetune.sampler=sag --out runs/acdc-sag
  arco train --config phantom2d --stage supervised --out runs/p2d-sup
  arco train --config phantom2d --out runs/p2d --resume             # continue from checkpoints/last.pt
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train ARCO (stage 1 + stage 2) or the supervised baseline",
        description="Train on a dataset given by a config preset or YAML file. Each stage writes its own "
        "folder RUN/<stage> with config.yaml, split.json, log.csv, checkpoints/{last,best}.pt, summary.json "
        "and curves.png.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", "-c", default="phantom2d", help="preset name (see --list-presets) or YAML path")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. finetune.sampler=sag or data.patch_size=[96,96] (repeatable)",
    )
    p.add_argument(
        "--stage",
        choices=("pretrain", "finetune", "supervised", "all"),
        default=None,
        help="stage to run (default: the config's `stages`, normally pretrain then finetune; all = both)",
    )
    p.add_argument("--out", "-o", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue each stage from RUN/<stage>/checkpoints/last.pt")
    p.add_argument("--init", default=None, metavar="CKPT", help="initialise finetune from this checkpoint")
    p.add_argument("--list-presets", action="store_true", help="print the built-in presets and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from arco.config import load_config, presets, to_dict, train

    if args.list_presets:
        print("\n".join(presets()))
        return 0
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    stages = None
    if args.stage == "all":
        stages = ("pretrain", "finetune")
    elif args.stage is not None:
        stages = (args.stage,)
    out = Path(args.out) if args.out else Path("runs") / Path(str(args.config)).stem
    results = train(cfg, out, stages=stages, resume=args.resume, init_from=args.init)
    for stage, s in results.items():
        best = s.get("best_val_dice")
        best_text = "n/a (no val split)" if best is None else f"{best:.4f} @ {s.get('best_iteration')}"
        print(
            f"{stage}: {s['completed_iterations']}/{s['iterations']} iterations in "
            f"{s['wall_seconds']:.0f} s, "
            f"best val Dice {best_text}; checkpoint {s['checkpoints']['best']}"
        )
    return 0
