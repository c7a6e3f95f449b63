"""``run_study``: read a study, plan it, run its jobs, collect the finished runs and write the report.

Outputs in the study folder ``DIR``: ``runs/<arm>/seed<k>/`` (ordinary run folders; shared stages are links into
``shared/``), ``tune/`` (the tuning runs, when the study has a ``tune:`` section), ``logs/`` (one log per job),
``plan.json``, ``tune.json``, ``history.jsonl``, ``results.csv``, ``per_case.csv``, ``per_case_last.csv``,
``study.json``, ``study.md``, ``study.html`` and the figures (with the qualitative panel).

A study with a ``tune:`` section runs in two phases: the tuning runs (:mod:`arco.study.tune`), then the main runs
with each budget's chosen setting; a main run that equals a tuning run links to its stages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arco._checks import ConfigError
from arco._io import atomic_write_text
from arco.report_html import source_commit
from arco.study.collect import RunResult, collect_run, write_per_case, write_results
from arco.study.figures import write_figures
from arco.study.launch import SlurmOptions, check_slurm, run_inline, run_local, run_slurm, visible_gpus
from arco.study.plan import (
    Plan,
    job_done,
    make_plan,
    retire_stale,
    reusable_stages,
    run_job_id,
    write_fingerprints,
)
from arco.study.provenance import machine, record_invocation, training_seconds
from arco.study.qualitative import write_qualitative
from arco.study.report import summarise, write_report
from arco.study.spec import RunSpec, StudySpec, check_methods, expand, load_study
from arco.study.tune import assign, choose, tuning_runs, tuning_summary

__all__ = ["run_study", "plan_study", "LAUNCHERS"]

logger = logging.getLogger(__name__)
LAUNCHERS = ("local", "inline", "slurm")


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One ``arco study`` at a time per study folder."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".study.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise ConfigError(f"another `arco study` is running in {out}; wait for it or use another --out") from exc
        yield


def _prepare_data(runs: Sequence[RunSpec]) -> None:
    """Generate every phantom the runs use once, before parallel jobs could race to write it."""
    import arco.data  # noqa: F401 - importing arco.data registers every phantom kind
    from arco.data.phantom import PHANTOMS, ensure_phantom

    seen = set()
    for r in runs:
        d = r.config.data
        key = (d.dataset, d.root, d.subjects, d.seed, d.image_size)
        if d.dataset in PHANTOMS and d.generate and key not in seen:
            seen.add(key)
            ensure_phantom(d.root, d.dataset, True, d.subjects, d.seed, d.image_size)


def _main_runs(spec: StudySpec, out: Path, fast: bool, tune: list[RunSpec], provisional: bool = False):
    """(the tuning choices, the main runs with them, arm -> why it has no choice). ``provisional``: a budget whose
    runs have not finished is counted with its first setting (``--dry-run`` before the tuning phase)."""
    choices = choose(spec, tune)
    if provisional:
        for c in choices:
            if c["chosen"] is None:
                c.update(chosen=c["candidates"][0]["setting"], provisional=True)
    tuned, skipped = assign(spec, choices)
    return choices, expand(spec, out, fast, tuned, skip=skipped), skipped


def plan_study(
    study: str,
    out: str | os.PathLike,
    fast: bool = False,
    overrides: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    link: bool = True,
    reuse: Sequence[str | os.PathLike] = (),
) -> tuple[StudySpec, Plan]:
    """Read and expand a study and plan its stages and jobs (``link``: create the run folders and links). With a
    ``tune:`` section the plan holds the tuning runs and the main runs with the choices made so far (a budget not
    yet decided counted with its first setting)."""
    spec = load_study(study, overrides, seeds)
    check_methods(spec)
    out = Path(out).resolve()
    tune = tuning_runs(spec, out, fast)
    _, runs, _ = _main_runs(spec, out, fast, tune, provisional=True)
    reused = reusable_stages(reuse) if reuse else {}
    return spec, make_plan([*tune, *runs], out, link=link, tuning={r.key for r in tune}, reuse=reused)


def _plan_json(plan: Plan, fast: bool) -> str:
    return json.dumps(
        {
            "fast": fast,
            "runs": {
                r.key: {"folder": str(r.folder), "stages": dict(zip([s.name for s in r.config.stages], fps))}
                for r, fps in ((r, plan.run_fingerprints[r.key]) for r in plan.runs)
            },
            "shared": {
                t.fingerprint: {"stage": t.stage, "folder": str(t.folder), "runs": t.runs} for t in plan.shared()
            },
            "reused": {t.fingerprint: {"stage": t.stage, "folder": str(t.folder)} for t in plan.reused()},
            "jobs": {j.id: {"needs": sorted(j.needs), "log": str(j.log)} for j in plan.jobs.values()},
        },
        indent=1,
    )


def _check_fresh(out: Path) -> None:
    for sub in ("runs", "shared"):
        if (out / sub).is_dir() and any((out / sub).iterdir()):
            raise ConfigError(
                f"{out} already holds a study ({out / sub} is not empty): pass --resume to continue it (finished runs "
                "are kept), or choose another --out"
            )


def _uses_cuda(runs: Sequence[RunSpec]) -> bool:
    from arco._device import resolve_device

    return any(resolve_device(r.config.engine.device).type == "cuda" for r in runs)


def _launch(plan: Plan, todo: dict, launcher: str, jobs: int, resume: bool, slurm: SlurmOptions | None, report) -> dict:
    if launcher == "inline":
        return run_inline(todo, resume, 0, report)
    if launcher == "slurm":
        return run_slurm(todo, slurm or SlurmOptions(), plan.out / "slurm", resume, report)
    gpus = visible_gpus() if _uses_cuda(plan.runs) else []
    return run_local(todo, max(1, jobs), resume, report, gpus)


def _collect(spec: StudySpec, plan: Plan, outcomes: dict) -> tuple[list[RunResult], list[dict[str, str]]]:
    results, failed = [], []
    axes = list(spec.axes)
    for run in plan.runs:
        job = plan.jobs.get(run_job_id(run.key))
        if job is None:  # a tuning run: never scored on the test split
            continue
        if job_done(job):
            results.append(collect_run(run, axes))
            continue
        o = outcomes.get(job.id)
        failed.append(
            {"run": run.key, "reason": o.reason if o else "not finished", "log": o.log if o else str(job.log)}
        )
    return results, failed


def run_study(
    study: str,
    out: str | os.PathLike,
    jobs: int = 1,
    resume: bool = False,
    fast: bool = False,
    launcher: str = "local",
    slurm: SlurmOptions | None = None,
    overrides: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    report: Callable[[str], None] | None = None,
    reuse: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Run (or resume) a study and write its results; returns the ``study.json`` content.

    Args:
        study: built-in study name or study YAML path.
        out: study folder.
        jobs: parallel worker processes (``local``).
        resume: keep finished runs and stages, resume interrupted stages from ``last.pt``.
        fast: divide every schedule by 10 (smoke run).
        launcher: ``local`` (worker processes), ``inline`` (this process) or ``slurm`` (submitit).
        slurm: Slurm resources for ``launcher="slurm"``.
        overrides: ``--set`` overrides of every run; seeds: replace the study's seeds.
        report: called with one line per event (default: the logger).
        reuse: folders of earlier studies whose finished stages with the same fingerprint are linked, not trained.

    Raises:
        ConfigError: bad study, unknown methods, a non-empty ``out`` without ``resume``, another study running.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if int(jobs) < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    if launcher == "slurm":
        check_slurm(slurm or SlurmOptions())
    report = report or logger.info
    out = Path(out).resolve()
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    host = machine()
    with _lock(out):
        if not resume:
            _check_fresh(out)
        spec = load_study(study, overrides, seeds)
        check_methods(spec)
        reused = reusable_stages(reuse) if reuse else {}

        def launch(plan: Plan, todo: dict) -> dict:
            return _launch(plan, todo, launcher, jobs, resume, slurm, report) if todo else {}

        tune, outcomes = _tuning_phase(spec, out, fast, reused, resume, launch, report)
        choices, runs, skipped = _main_runs(spec, out, fast, tune)
        for c in choices:
            got = f"{c['chosen']} (val Dice {c['val_dice']:.4f})" if c["chosen"] else f"no choice: {c['reason']}"
            report(f"tuned   {c['arm']}: {got}")
        if spec.tune is not None:
            atomic_write_text(out / "tune.json", json.dumps(tuning_summary(spec, choices), indent=1) + "\n")
        plan = make_plan([*tune, *runs], out, tuning={r.key for r in tune}, reuse=reused)
        _record_fingerprints(plan, resume, report)
        _prepare_data(plan.runs)
        atomic_write_text(out / "plan.json", _plan_json(plan, fast))
        todo = _todo(plan, resume, set(outcomes))
        report(
            f"study {spec.name}: {len(runs)} runs ({len(spec.arms()) - len(skipped)} arms x {len(spec.seeds)} "
            f"seeds), {len(plan.stages)} stages ({len(plan.shared())} shared, {len(plan.reused())} reused), "
            f"{len(todo)} of {len(plan.jobs)} jobs to run"
        )
        outcomes.update(launch(plan, todo))
        summary, figures, results, panels = _summary(spec, plan, outcomes, len(runs), skipped, fast)
        summary["tuning"] = tuning_summary(spec, choices)
        args = {"jobs": jobs, "launcher": launcher, "fast": fast, "set": list(overrides),
                "seeds": list(seeds) if seeds is not None else None, "reuse": [str(r) for r in reuse]}  # fmt: skip
        summary.update(_provenance(out, started, time.perf_counter() - t0, outcomes, host, args))
        write_report(summary, out, figures, results, panels)
    return summary


def _summary(spec: StudySpec, plan: Plan, outcomes: dict, planned: int, skipped: dict, fast: bool) -> tuple:
    """Collect the finished runs, write the CSV files, figures and panels; returns (the summary, the figures, the
    results, the panels)."""
    out = plan.out
    results, failed = _collect(spec, plan, outcomes)
    failed += [{"run": f"{arm}/seed{s}", "reason": why, "log": str(out / "logs")}
               for arm, why in skipped.items() for s in spec.seeds]  # fmt: skip
    write_results(results, list(spec.axes), out / "results.csv")
    write_per_case(results, list(spec.axes), out / "per_case.csv")
    write_per_case(results, list(spec.axes), out / "per_case_last.csv", checkpoint="last")
    figures = write_figures(spec, results, out)
    panels = write_qualitative(spec, results, out) if results else []
    summary = summarise(spec, results, planned + len(skipped) * len(spec.seeds), failed, fast)
    return summary, figures, results, panels


def _record_fingerprints(plan: Plan, resume: bool, report: Callable[[str], None]) -> None:
    """On ``--resume`` move stages trained for another fingerprint to ``DIR/stale/`` (they train again); then record
    in every stage folder the fingerprint it is trained for."""
    for task, where in retire_stale(plan) if resume else ():
        report(f"{task.folder}: trained for another fingerprint (its code or settings changed since), moved to "
               f"{where}; it trains again")  # fmt: skip
    write_fingerprints(plan)


def _tuning_phase(spec, out, fast, reused, resume, launch, report) -> tuple[list[RunSpec], dict]:
    """Train the tuning runs (none without a ``tune:`` section); returns them and the jobs' outcomes."""
    tune = tuning_runs(spec, out, fast)
    if not tune:
        return tune, {}
    plan = make_plan(tune, out, tuning={r.key for r in tune}, reuse=reused)
    _record_fingerprints(plan, resume, report)
    _prepare_data(tune)
    atomic_write_text(out / "plan.json", _plan_json(plan, fast))
    todo = _todo(plan, resume, set())
    report(
        f"study {spec.name}: tuning phase, {len(tune)} runs ({len(spec.tune.grid)} budgets x {spec.tune.size} "
        f"settings), {len(todo)} of {len(plan.jobs)} jobs to run"
    )
    return tune, launch(plan, todo)


def _provenance(out: Path, started: str, seconds: float, outcomes: dict, host: dict, args: dict) -> dict[str, Any]:
    """This invocation's record in ``history.jsonl`` (``args``: its --jobs, --launcher, --fast, --set, --seeds,
    --reuse), and what ``study.json`` says about time, code and machine."""
    commit = source_commit()
    wall = round(seconds, 1)
    entry = {
        "started": started,
        "wall_seconds": wall,
        "jobs_run": len(outcomes),
        "jobs_failed": sum(o.status != "ok" for o in outcomes.values()),
        **args,
        "commit": commit,
        "machine": host,
    }
    history = record_invocation(out, entry)
    total = round(sum(float(h.get("wall_seconds", 0.0)) for h in history), 1)
    train, stages = training_seconds(out)
    return {"wall_seconds": wall, "wall_total_seconds": total, "history": history, "machine": host, "commit": commit,
            "jobs": args["jobs"], "train_seconds": train, "train_stages": stages}  # fmt: skip


def _todo(plan: Plan, resume: bool, done_here: set[str]) -> dict:
    """The plan's jobs still to run: all of them, less the finished ones under ``resume`` and those this invocation
    already ran (the tuning phase's, planned again with the main runs)."""
    todo = {
        k: dataclasses.replace(j, needs=set(j.needs))
        for k, j in plan.jobs.items()
        if not ((resume or k in done_here) and job_done(j))
    }
    for j in todo.values():
        j.needs &= set(todo)
    return todo
