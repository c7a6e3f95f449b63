"""Paired differences between any two arms of finished studies, as `arco study` computes them against `compare_to`.

A study's report pairs every arm with its one reference arm. This prints the same statistic for any pair, also
across study folders: the mean over (seed, test case) pairs of the per-case mean foreground Dice, its 95 % paired
bootstrap interval and the Wilcoxon p-value (`arco.study.stats.paired_difference`).

    python scripts/paired_arms.py runs/contrast reference-sg:reference-ns batch-sg:batch-ns reference-sg:batch-sg
    python scripts/paired_arms.py runs/choices:literal runs/contrast:reference-sg      # two folders, one pair
    python scripts/paired_arms.py runs/mni --group block reference-sg:supervised      # per block, and pooled

Each pair is ``A:B`` (A minus B) with arms of the folder given first, or two ``FOLDER:ARM`` arguments.
``--group AXIS`` also prints the difference within each value of a study axis (e.g. the labeled block).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def case_dice(folder: Path) -> dict[tuple[str, ...], dict[tuple[int, str], float]]:
    """``{(arm, *axis values): {(seed, case): mean foreground Dice}}`` from a study's ``per_case.csv``."""
    acc: dict[tuple, dict[tuple[int, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(folder / "per_case.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            acc[(row["arm"],)][(int(row["seed"]), row["case"])].append(float(row["dice"]))
    return {k: {sc: sum(v) / len(v) for sc, v in d.items()} for k, d in acc.items()}


def axis_of(folder: Path, axis: str) -> dict[str, str]:
    """``{arm: value of axis}`` from a study's ``results.csv``."""
    with open(folder / "results.csv", newline="") as fh:
        return {r["arm"]: r[axis] for r in csv.DictReader(fh)}


def report(name: str, a: dict[tuple[int, str], float], b: dict[tuple[int, str], float]) -> None:
    from arco.study.stats import paired_difference

    keys = sorted(set(a) & set(b))
    if not keys:
        print(f"{name}: no common (seed, case) pairs")
        return
    d = paired_difference([a[k] for k in keys], [b[k] for k in keys])
    seeds = sorted({k[-2] for k in keys})  # keys end with (seed, case)
    print(
        f"{name}: {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], Wilcoxon p {d['p_wilcoxon']:.3g}, "
        f"{d['n']} pairs (seeds {seeds[0]}-{seeds[-1]})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="study folder (or FOLDER:ARM for a two-folder pair)")
    ap.add_argument("pairs", nargs="+", help="A:B arm pairs of the folder (A minus B), or FOLDER:ARM")
    ap.add_argument("--group", help="also print the difference within each value of this study axis")
    args = ap.parse_args()
    if ":" in args.folder and len(args.pairs) == 1 and ":" in args.pairs[0]:
        (fa, arm_a), (fb, arm_b) = args.folder.rsplit(":", 1), args.pairs[0].rsplit(":", 1)
        report(f"{arm_a} ({fa}) - {arm_b} ({fb})", case_dice(Path(fa))[(arm_a,)], case_dice(Path(fb))[(arm_b,)])
        return
    folder = Path(args.folder)
    dice = case_dice(folder)
    groups = axis_of(folder, args.group) if args.group else {}
    for pair in args.pairs:
        left, right = pair.split(":")
        if groups:
            values = sorted({v for arm, v in groups.items()})
            pooled_a, pooled_b = {}, {}
            for v in values:
                arm_a = next((a for a, g in groups.items() if g == v and a.endswith(left)), None)
                arm_b = next((a for a, g in groups.items() if g == v and a.endswith(right)), None)
                if arm_a and arm_b:
                    a, b = dice[(arm_a,)], dice[(arm_b,)]
                    report(f"{left} - {right} [{args.group} {v}]", a, b)
                    pooled_a.update({(v, *k): x for k, x in a.items()})
                    pooled_b.update({(v, *k): x for k, x in b.items()})
            report(f"{left} - {right} [all {args.group} values]", pooled_a, pooled_b)
        else:
            report(f"{left} - {right}", dice[(left,)], dice[(right,)])


if __name__ == "__main__":
    main()
