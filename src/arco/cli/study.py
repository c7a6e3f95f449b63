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
  arco study table1 --out runs/t1 --dry-run --jobs 2         # stages to train and the estimated CPU / wall time
  arco study table3 --out runs/t3 --reuse runs/t1            # link stages runs/t1 already trained (same fingerprint)
  arco study report runs/t1 runs/t3 --out docs/results.md --readme README.md --headline table1
  arco study variance runs/t3 --seeds 0 --draws 64 --batches 4  # NS/SG/SAG variance on each arm's trained run

A study file has `base` (preset or config), `seeds`, `grid` (axis -> value -> overrides, or {method, set,
drop_stages}), `compare_to` (reference arm, or a list of them) and optionally `tune` (the same small budget per
method, chosen on validation at one seed; see `arco.study.budget`); see `arco.study.spec`. Every run is an
ordinary run folder DIR/runs/<arm>/seed<k>/ (`arco evaluate --checkpoint DIR/runs/<arm>/seed<k>/<last stage>`);
stages identical between runs (stage 1 of arms differing only in stage 2) are trained once under DIR/shared/ and
linked. Outputs: DIR/study.html (everything on one page), results.csv, per_case.csv, study.json, study.md and PNG
figures with the qualitative panel. Checkpoints are chosen on the validation split only; test metrics of the
selected and of the last checkpoint are computed once per run and cached in the run folder.

`arco study report DIR ... --out PAGE.md` writes one results page from finished study folders (tables, reading,
tuning choices, peak iterations, commit, machine, wall time; figures copied next to the page); `--readme README.md
--headline STUDY` also rewrites the README's block between <!-- results:headline:start/end --> from that study.

`arco study variance DIR` runs `arco variance --checkpoint` on one seed's stage-2 run of every arm with a pixel
contrastive loss (ARCO, MONA, the frameworks of `finetune.framework`) and writes DIR/variance.csv, which `arco study
report` shows as a table under the study (see `arco.study.variance`)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a grid of runs over seeds and summarise it (the paper's tables and Fig. 5)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "study",
        nargs="*",
        metavar="STUDY",
        help="built-in study name (see --list) or a study YAML file; or `report DIR ...` (results page), or "
        "`variance DIR` (the samplers' variance on its trained runs)",
    )
    p.add_argument("--out", "-o", help="study folder (runs, logs, results); with `report`: the page to write")
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
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs, the stages to train and the estimated CPU / wall time; train nothing",
    )
    p.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="DIR",
        help="link finished stages of an earlier study folder with the same fingerprint instead of "
        "training them (repeatable; give every study the same --set data.root=...)",
    )
    r = p.add_argument_group("report (arco study report DIR ... --out PAGE)")
    r.add_argument(
        "--figures", metavar="DIR", help="where the figures are copied (default: figures/results next to the page)"
    )
    r.add_argument("--title", default="Results", help="the page's title (Results)")
    r.add_argument("--readme", metavar="README", help="also rewrite this file's headline block (needs --headline)")
    r.add_argument("--headline", metavar="STUDY", help="the study (name or folder) of the README's headline")
    v = p.add_argument_group("variance (arco study variance DIR; the run seed is the first of --seeds, default 0)")
    v.add_argument("--samplers", nargs="+", default=["ns", "sg", "sag"], help="samplers to compare (ns sg sag)")
    v.add_argument("--draws", type=int, default=64, help="sampler draws per batch and sampler (64)")
    v.add_argument("--batches", type=int, default=4, help="training batches averaged over (4)")
    v.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cpu)")
    v.add_argument("--arms", nargs="+", metavar="GLOB",
                   help="measure only these arms (globs, e.g. '*_sg'); arms measured before stay listed")  # fmt: skip
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


def _hours(seconds: float) -> str:
    return (
        f"{seconds / 3600:.1f} h ({seconds:.0f} s)" if seconds >= 3600 else f"{seconds / 60:.0f} min ({seconds:.0f} s)"
    )


def _dry_run(args: argparse.Namespace, study: str) -> int:
    from arco.study import plan_study
    from arco.study.cost import estimate
    from arco.study.launch import cpu_cores
    from arco.study.plan import evaluation_fresh, stage_finished

    spec, plan = plan_study(study, args.out, args.fast, args.overrides, args.seeds, link=False, reuse=args.reuse)
    tuning = [r for r in plan.runs if r.key.startswith("tune/")]
    main = [r for r in plan.runs if not r.key.startswith("tune/")]
    for r in plan.runs:
        stages = ", ".join(f"{s.name} ({s.method}, {s.schedule.iterations} it)" for s in r.config.stages)
        print(f"  {r.key}: {stages}")
    for t in plan.shared():
        print(f"  shared {t.stage} {t.fingerprint}: {len(t.runs)} runs")
    todo = [t for t in plan.stages.values() if not t.reused and not stage_finished(t.folder)]
    evals = sum(not all(evaluation_fresh(r.folder, r.config.stages[-1], w) for w in ("best", "last")) for r in main)
    est = estimate(todo, evals, args.jobs, cpu_cores())
    if spec.tune is not None:
        where = ", ".join(f"{k}={v}" for k, v in spec.tune.where.items()) or "every setting of the other axes"
        print(f"study {spec.name}: tuning phase {len(tuning)} runs ({len(spec.tune.grid)} budgets x {spec.tune.size} "
              f"settings, seed {spec.tune.seed}, {where}); main runs counted with each undecided budget's first "
              "setting (an estimate until the tuning has run)")  # fmt: skip
    print(f"study {spec.name}: {len(main)} runs ({len(spec.arms())} arms x {len(spec.seeds)} seeds), "
          f"{len(plan.stages)} stages ({len(plan.shared())} shared, {len(plan.reused())} reused from --reuse), "
          f"{len(todo)} to train, {evals} run evaluations to do")  # fmt: skip
    if est["gpu"]:
        print("estimate: none for GPU runs (arco.study.cost holds CPU costs only)")
        return 0
    per = ", ".join(f"{m} {_hours(sec)}" for m, sec in sorted(est["by_method"].items(), key=lambda t: -t[1]))
    print(f"estimated CPU time (one thread per run, arco.study.cost): {_hours(est['cpu_seconds'])}"
          + (f": {per}" if per else ""))  # fmt: skip
    if est["unknown"]:
        print(f"  not in the cost table, counted at the default: {', '.join(est['unknown'])}")
    if tuning:
        keys = {r.key for r in tuning}
        phase = estimate([t for t in todo if set(t.runs) <= keys], 0, args.jobs, cpu_cores())
        print(f"  of which the tuning phase: {_hours(phase['cpu_seconds'])}")
    print(f"estimated wall time with --jobs {args.jobs} on {cpu_cores()} cores: {_hours(est['wall_seconds'])} "
          "(idle cores assumed; a loaded machine takes longer)")  # fmt: skip
    return 0


def _report(args: argparse.Namespace, folders: list[str]) -> int:
    from pathlib import Path

    from arco.study.results import load_summary, results_page, write_headline

    if not folders or not args.out:
        raise ValueError("arco study report needs study folders and --out PAGE.md, e.g. arco study report runs/t1 "
                         "runs/t3 --out docs/results.md")  # fmt: skip
    if bool(args.readme) != bool(args.headline):
        raise ValueError("--readme and --headline go together: --readme README.md --headline STUDY")
    command = "arco study report " + " ".join(folders) + f" --out {args.out}"
    if args.readme:
        command += f" --readme {args.readme} --headline {args.headline}"
    copied = results_page(folders, args.out, args.figures, args.title, command)
    print(f"wrote {args.out} ({len(folders)} studies, {sum(map(len, copied.values()))} figures)")
    if args.readme:
        names = {load_summary(f)["study"]: f for f in folders}
        by_folder = {str(Path(f).resolve()): f for f in folders}
        folder = names.get(args.headline) or by_folder.get(str(Path(args.headline).resolve()))
        if folder is None:
            raise ValueError(f"--headline {args.headline!r} is none of the studies given ({', '.join(names)})")
        name = load_summary(folder)["study"]
        figure = next((f for f in copied.get(name, []) if f.name.endswith("dice_per_arm.png")), None)
        write_headline(args.readme, folder, args.out, figure)
        print(f"rewrote the headline block of {args.readme} from {name}")
    return 0


def _variance(args: argparse.Namespace, folders: list[str]) -> int:
    from arco.study.variance import SUMMARY, measure_study

    if len(folders) != 1:
        raise ValueError("arco study variance needs one study folder, e.g. arco study variance runs/t3")
    if args.draws < 2 or args.batches < 1:
        raise ValueError(f"--draws must be >= 2 and --batches >= 1, got {args.draws} and {args.batches}")
    seed = args.seeds[0] if args.seeds else 0
    measure_study(folders[0], seed, args.samplers, args.draws, args.batches, args.device,
                  report=lambda line: print(line, flush=True), arms=args.arms)  # fmt: skip
    print(f"wrote {folders[0]}/{SUMMARY}; `arco study report {folders[0]} --out PAGE.md` shows it")
    return 0


def run(args: argparse.Namespace) -> int:
    from arco.study import SlurmOptions, run_study

    if args.list:
        _print_list()
        return 0
    if args.study[:1] == ["report"]:
        return _report(args, args.study[1:])
    if args.study[:1] == ["variance"]:
        return _variance(args, args.study[1:])
    if len(args.study) > 1:
        raise ValueError(f"give one study, got {' '.join(args.study)} (for a results page: arco study report DIR ...)")
    if not args.study or not args.out:
        raise ValueError("give a study (a built-in name, see --list, or a YAML file) and --out DIR")
    study = args.study[0]
    from arco._io import check_out_dir

    check_out_dir(args.out)
    if args.dry_run:
        return _dry_run(args, study)
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
        study,
        args.out,
        jobs=args.jobs,
        resume=args.resume,
        fast=args.fast,
        launcher=args.launcher,
        slurm=slurm,
        overrides=args.overrides,
        seeds=args.seeds,
        report=lambda line: print(line, flush=True),
        reuse=args.reuse,
    )
    from pathlib import Path

    print()
    print((Path(args.out) / "study.md").read_text())
    failed = summary["runs"]["failed"]
    print(f"study took {summary['wall_seconds']:.0f} s (all invocations: {summary['wall_total_seconds']:.0f} s); "
          f"results in {args.out}")  # fmt: skip
    print(f"open {Path(args.out) / 'study.html'}")
    if failed:
        print(f"{len(failed)} run(s) failed: " + "; ".join(f"{f['run']} (log: {f['log']})" for f in failed))
        return 1
    return 0
