"""`arco study`: a grid of runs over seeds (the paper's tables, Fig. 5), on this machine or a Slurm cluster."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]

EPILOG = """examples:
  arco study --list                                         # built-in studies
  arco study table3 --out runs/t3 --jobs 2                  # samplers NS/SG/SAG over seeds, 2 parallel runs
  arco study table3 --out runs/t3 --jobs 2 --fast           # the same with every schedule / 10 (smoke run)
  arco study table3 --out runs/t3 --jobs 2 --resume         # after an interruption: finished runs are kept
  arco study my_study.yaml --out runs/s --set data.root=/data/ACDC --seeds 0 1 2
  arco study table1-acdc --out runs/t1 --launcher slurm --partition gpu --time 720 --gpus-per-job 1

A study file has `base` (preset or config), `seeds`, `grid` (axis -> value -> overrides, or {method, set,
drop_stages}) and `compare_to` (reference arm); see `arco.study.spec`. Every run is an ordinary run folder
DIR/runs/<arm>/seed<k>/ (`arco evaluate --checkpoint DIR/runs/<arm>/seed<k>/<last stage>`); stages identical
between runs (stage 1 of arms differing only in stage 2) are trained once under DIR/shared/ and linked.
Outputs: DIR/study.html (everything on one page), results.csv, per_case.csv, study.json, study.md and PNG
figures with the qualitative panel. Checkpoints are chosen on the
validation split only; test metrics are computed once per run and cached in the run folder."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a grid of runs over seeds and summarise it (the paper's tables and Fig. 5)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", nargs="?", help="built-in study name (see --list) or a study YAML file")
    p.add_argument("--out", "-o", help="study folder (runs, logs, results)")
    p.add_argument("--list", action="store_true", help="print the built-in studies and exit")
    p.add_argument("--jobs", "-j", type=int, default=1,
                   help="jobs at once (local launcher; default 1); with CUDA at most one per visible GPU")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue a study: keep finished runs, resume the others")
    p.add_argument("--fast", action="store_true", help="divide every schedule by 10 (smoke run of the whole study)")
    p.add_argument("--launcher", choices=("local", "inline", "slurm"), default="local",
                   help="local: worker processes (default); inline: in this process; slurm: submitit")  # fmt: skip
    p.add_argument("--seeds", type=int, nargs="+", help="replace the study's seeds")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value of every run ({out} = the study folder; repeatable)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="print the runs, shared stages and jobs; train nothing")
    g = p.add_argument_group("slurm (--launcher slurm)")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument("--time", type=int, default=240, metavar="MIN", help="time limit per job in minutes (240)")
    g.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per job (1)")
    g.add_argument("--cpus-per-job", type=int, default=4, help="CPUs per job; also the torch threads (4)")
    g.add_argument("--mem-gb", type=float, help="memory per job in GB")
    g.add_argument("--array-parallelism", type=int, default=16, help="jobs of one array running at once (16)")
    g.add_argument("--slurm-cluster", choices=("slurm", "local"), default="slurm",
                   help="'local' runs the Slurm path with submitit's local executor (no cluster needed)")  # fmt: skip
    g.add_argument("--slurm-param", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sbatch parameter, e.g. account=abc or qos=high (repeatable)")  # fmt: skip
    p.set_defaults(func=run)


def _print_list() -> None:
    from arco.study import builtin_studies

    studies = builtin_studies()
    width = max(len(n) for n in studies) + 2
    print("Built-in studies (arco study NAME --out DIR):")
    for name, desc in studies.items():
        print(f"  {name:<{width}}{desc}")


def _dry_run(args: argparse.Namespace) -> int:
    from arco.study import plan_study

    spec, plan = plan_study(args.study, args.out, args.fast, args.overrides, args.seeds, link=False)
    print(f"study {spec.name}: {len(plan.runs)} runs, {len(plan.stages)} stages to train, {len(plan.shared())} shared")
    for r in plan.runs:
        stages = ", ".join(f"{s.name} ({s.method}, {s.schedule.iterations} it)" for s in r.config.stages)
        print(f"  {r.key}: {stages}")
    for t in plan.shared():
        print(f"  shared {t.stage} {t.fingerprint}: {len(t.runs)} runs")
    return 0


def run(args: argparse.Namespace) -> int:
    from arco.study import SlurmOptions, run_study

    if args.list:
        _print_list()
        return 0
    if not args.study or not args.out:
        raise ValueError("give a study (a built-in name, see --list, or a YAML file) and --out DIR")
    from arco._io import check_out_dir

    check_out_dir(args.out)
    if args.dry_run:
        return _dry_run(args)
    for e in args.slurm_param:
        if "=" not in e:
            raise ValueError(f"--slurm-param expects KEY=VALUE, got {e!r}")
    slurm = SlurmOptions(
        partition=args.partition,
        time_min=args.time,
        gpus=args.gpus_per_job,
        cpus=args.cpus_per_job,
        mem_gb=args.mem_gb,
        array_parallelism=args.array_parallelism,
        cluster=args.slurm_cluster,
        extra=tuple(args.slurm_param),
    )
    summary = run_study(
        args.study,
        args.out,
        jobs=args.jobs,
        resume=args.resume,
        fast=args.fast,
        launcher=args.launcher,
        slurm=slurm,
        overrides=args.overrides,
        seeds=args.seeds,
        report=lambda line: print(line, flush=True),
    )
    from pathlib import Path

    print()
    print((Path(args.out) / "study.md").read_text())
    failed = summary["runs"]["failed"]
    print(f"study took {summary['wall_seconds']:.0f} s; results in {args.out}")
    print(f"open {Path(args.out) / 'study.html'}")
    if failed:
        print(f"{len(failed)} run(s) failed: " + "; ".join(f"{f['run']} (log: {f['log']})" for f in failed))
        return 1
    return 0
