"""`arco train`: train any registered method (or ARCO's two stages) from a preset or YAML config."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  arco train --list-methods                                         # every method, with its paper
  arco train --config phantom2d --out runs/p2d                      # the preset's stages (ARCO: pretrain, finetune)
  arco train --config phantom2d --method supervised --out runs/sup  # any method on the preset's data and budget
  arco train --config phantom2d --method arco-ns --out runs/ns      # ARCO with the NS sampler (MONA's)
  arco train --config phantom2d --set finetune.sampler=sag --set finetune.iterations=500 --out runs/sag
  arco train --config acdc --set data.root=data/ACDC --out runs/acdc
  arco train --config phantom2d --out runs/p2d --resume             # continue from checkpoints/last.pt
  arco train --config my.yaml --plugin my_method.py --method my-method --iterations 20   # a method of your own

--set KEY=VALUE: KEY is section.key (data, model, optim, schedule, engine, eval) or stage.key, where stage.key is
the stage's schedule (iterations, batch_labeled, batch_unlabeled, lr, lr_schedule, ...) or a parameter of its method
(e.g. finetune.sampler, finetune.lambda_unsup). Values are YAML.
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
    p.add_argument("--list-presets", action="store_true", help="print the built-in presets and exit")
    p.add_argument("--list-methods", action="store_true", help="print every method with its paper and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def list_methods() -> str:
    """One line per recipe (what ``--method`` trains), then the stage methods recipes are made of."""
    import textwrap

    from arco.methods import get_method, get_recipe, method_names, recipe_names

    in_recipes = {s.method for n in recipe_names() for s in get_recipe(n).stages if len(get_recipe(n).stages) > 1}
    lines = ["Methods (arco train --method NAME):"]
    width = max(len(n) for n in recipe_names()) + 2
    for name in recipe_names():
        if name in in_recipes:
            continue
        r = get_recipe(name)
        stages = " -> ".join(s.method for s in r.stages)
        what = r.description if len(r.stages) == 1 else f"{r.description} [{stages}]"
        lines.append(f"  {name:<{width}}{what}")
        lines.append(textwrap.indent(textwrap.fill(r.paper, 100), " " * (width + 4)))
    stage_only = [n for n in method_names() if n in in_recipes]
    if stage_only:
        lines.append("Stages of the multi-stage methods above (also trainable alone with --method):")
        for name in stage_only:
            lines.append(f"  {name:<{width}}{get_method(name).description}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from arco.config import load_config, presets, to_dict
    from arco.pipeline import train

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
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    out = Path(args.out) if args.out else Path("runs") / Path(str(args.config)).stem
    only = (args.stage,) if args.stage else None
    results = train(cfg, out, only=only, resume=args.resume, init_from=args.init)
    for stage, s in results.items():
        best = s.get("best_val_dice")
        best_text = "n/a (no val split)" if best is None else f"{best:.4f} @ {s.get('best_iteration')}"
        print(
            f"{stage}: {s['completed_iterations']}/{s['iterations']} iterations in {s['wall_seconds']:.0f} s, "
            f"best val Dice {best_text}; checkpoint {s['checkpoints']['best']}"
        )
    return 0
