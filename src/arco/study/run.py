"""``run_study``: read a study, plan it, run its jobs, collect the finished runs and write the report.

Outputs in the study folder ``DIR``: ``runs/<arm>/seed<k>/`` (ordinary run folders; shared stages are links into
``shared/``), ``logs/`` (one log per job), ``plan.json``, ``results.csv``, ``per_case.csv``, ``study.json``,
``study.md``, ``study.html`` and the figures (with the qualitative panel).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from arco._checks import ConfigError
from arco._io import atomic_write_text
from arco.study.collect import RunResult, collect_run, write_per_case, write_results
from arco.study.figures import write_figures
from arco.study.launch import SlurmOptions, check_slurm, run_inline, run_local, run_slurm, visible_gpus
from arco.study.plan import Plan, job_done, make_plan, retire_stale, write_fingerprints
from arco.study.qualitative import write_qualitative
from arco.study.report import summarise, write_report
from arco.study.spec import RunSpec, StudySpec, check_methods, expand, load_study

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


def plan_study(
    study: str,
    out: str | os.PathLike,
    fast: bool = False,
    overrides: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    link: bool = True,
) -> tuple[StudySpec, Plan]:
    """Read and expand a study and plan its stages and jobs (``link``: create the run folders and links)."""
    spec = load_study(study, overrides, seeds)
    check_methods(spec)
    runs = expand(spec, out, fast)
    return spec, make_plan(runs, out, link=link)


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
        job = plan.run_job(run)
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
    with _lock(out):
        if not resume:
            _check_fresh(out)
        spec, plan = plan_study(study, out, fast, overrides, seeds)
        for task, where in retire_stale(plan) if resume else ():
            report(f"{task.folder}: trained for another fingerprint (its code or settings changed since), moved to "
                   f"{where}; it trains again")  # fmt: skip
        write_fingerprints(plan)
        _prepare_data(plan.runs)
        atomic_write_text(out / "plan.json", _plan_json(plan, fast))
        todo = {
            k: dataclasses.replace(j, needs=set(j.needs)) for k, j in plan.jobs.items() if not (resume and job_done(j))
        }
        for j in todo.values():
            j.needs &= set(todo)
        report(
            f"study {spec.name}: {len(plan.runs)} runs ({len(spec.arms())} arms x {len(spec.seeds)} seeds), "
            f"{len(plan.stages)} stages ({len(plan.shared())} shared), {len(todo)} of {len(plan.jobs)} jobs to run"
        )
        outcomes = _launch(plan, todo, launcher, jobs, resume, slurm, report) if todo else {}
        results, failed = _collect(spec, plan, outcomes)
        write_results(results, list(spec.axes), out / "results.csv")
        write_per_case(results, list(spec.axes), out / "per_case.csv")
        figures = write_figures(spec, results, out)
        panels = write_qualitative(spec, results, out) if results else []
        summary = summarise(spec, results, len(plan.runs), failed, fast)
        summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
        write_report(summary, out, figures, results, panels)
    return summary
