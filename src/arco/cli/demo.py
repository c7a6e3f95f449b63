"""`arco demo`: supervised baseline vs ARCO-SG on the built-in phantom, on a CPU, in minutes."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train the supervised baseline and ARCO-SG on the built-in phantom and compare them",
        description="Generate the phantom2d data (if absent) under DIR/data, train the supervised "
        "baseline and ARCO-SG (stage 1 + stage 2) on the same labeled subjects with a CPU-sized schedule, "
        "evaluate both on the test split (DIR/evaluation/<method>/) and print per-class Dice/ASD with the "
        "difference. The two trainings run side by side and share one progress line. "
        "DIR/summary.json holds the numbers and the wall time; DIR/report.html is the whole comparison on one "
        "page (tables, per-case Dice, qualitative panel, training curves, overlays, configuration).",
    )
    p.add_argument("--out", "-o", default="arco-demo", help="output folder (default: ./arco-demo)")
    p.add_argument("--fast", action="store_true", help="a 4x shorter schedule (smoke test; ARCO may not win)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the demo preset (repeatable)",
    )
    p.set_defaults(func=run)


class _Progress:
    """One progress line for both trainings (the workers draw none): the iterations of both runs together, and
    each run's stage and count."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, state: dict) -> None:
        from tqdm import tqdm

        from arco.demo import METHOD_NAMES

        total = sum(s["total"] for s in state.values())
        if self.bar is None:
            self.bar = tqdm(total=total, desc="training", unit="it", dynamic_ncols=True)
        self.bar.n = sum(s["done"] for s in state.values())
        self.bar.set_postfix_str(
            " | ".join(
                f"{METHOD_NAMES[k]}{'' if s['stage'] == k else ' ' + s['stage']} {s['done']}/{s['total']}"
                for k, s in state.items()
            ),
            refresh=False,
        )
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from arco._io import check_out_dir
    from arco.demo import run_demo

    check_out_dir(args.out)
    progress = _Progress()
    try:
        s = run_demo(args.out, fast=args.fast, overrides=tuple(args.overrides), progress=progress)
    finally:
        progress.close()
    print(
        f"\nTest split ({len(s['test_cases'])} cases), best-on-val checkpoints; labeled subjects: "
        f"{', '.join(s['labeled'] or [])}"
    )
    print(s["table"])
    print(
        f"\nmean foreground Dice: supervised {s['supervised']['dice']:.4f}, ARCO-SG {s['arco']['dice']:.4f} "
        f"({s['arco']['dice'] - s['supervised']['dice']:+.4f}); wall time {s['wall_seconds']:.0f} s"
    )
    print(f"details: {args.out}/summary.json, {args.out}/evaluation/")
    print(f"open {s['report']}")
    return 0
