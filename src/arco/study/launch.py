"""Running a study's jobs: in worker processes on this machine, in this process, or as Slurm jobs (submitit).

- ``local``: up to ``jobs`` warm worker processes, each job started when the jobs it needs have finished. Each worker
  gets ``max(1, cores // workers)`` torch threads; with CUDA devices each worker sees one GPU
  (``CUDA_VISIBLE_DEVICES``), so at most one job runs per GPU.
- ``inline``: every job in this process, one after another (debugging, tests).
- ``slurm``: every job as a Slurm job through submitit, in waves of dependency level (a wave is one job array,
  ``array_parallelism`` of its jobs at once); the command waits for each wave and collects the results.

A failed job is reported with its log; jobs that need it are skipped; the others go on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arco._checks import ConfigError
from arco._io import atomic_write_text
from arco.study.plan import Job, waves

__all__ = [
    "Outcome",
    "SlurmOptions",
    "check_slurm",
    "cpu_cores",
    "run_inline",
    "run_local",
    "run_slurm",
    "visible_gpus",
]

logger = logging.getLogger(__name__)

Reporter = Callable[[str], None]


@dataclass
class Outcome:
    """How a job ended: ``ok``, ``failed`` (with its log) or ``skipped`` (a job it needs failed)."""

    status: str
    log: str = ""
    seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class SlurmOptions:
    """Slurm resources of every job (submitit ``AutoExecutor`` parameters)."""

    partition: str | None = None
    time_min: int = 240
    gpus: int = 1
    cpus: int = 4
    mem_gb: float | None = None
    array_parallelism: int = 16
    cluster: str = "slurm"  # "local" runs the same path with submitit's local executor (tests)
    extra: tuple[str, ...] = ()


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids a worker may be given (``CUDA_VISIBLE_DEVICES`` order), empty without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in env.split(",") if g.strip()] if env else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def _skip_dependents(jobs: dict[str, Job], outcomes: dict[str, Outcome]) -> None:
    changed = True
    while changed:
        changed = False
        for j in jobs.values():
            if j.id in outcomes:
                continue
            bad = [n for n in j.needs if n in outcomes and outcomes[n].status != "ok"]
            if bad:
                outcomes[j.id] = Outcome("skipped", str(j.log), reason=f"needs {bad[0]}, which did not finish")
                changed = True


def run_inline(jobs: dict[str, Job], resume: bool, threads: int, report: Reporter) -> dict[str, Outcome]:
    """Every job in this process, in dependency order."""
    from arco.study.worker import run_job

    outcomes: dict[str, Outcome] = {}
    for wave in waves(jobs):
        for job in wave:
            _skip_dependents(jobs, outcomes)
            if job.id in outcomes:
                continue
            t0 = time.perf_counter()
            try:
                run_job(job.spec(resume, threads))
                outcomes[job.id] = Outcome("ok", str(job.log), time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - a failed run must not stop the others; it is reported
                outcomes[job.id] = Outcome(
                    "failed", str(job.log), time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"
                )
            report(_line(job, outcomes[job.id]))
    return outcomes


def _line(job: Job, o: Outcome) -> str:
    if o.status == "ok":
        return f"done    {job.id} ({o.seconds:.0f} s)"
    return f"{o.status:<7} {job.id}: {o.reason} (log: {o.log})"


class _Worker:
    """A warm worker process (``python -m arco.study.worker --serve``) that runs one job at a time: torch and the
    plotting libraries are imported once per worker, not once per job."""

    def __init__(self, index: int, gpu: str | None, threads: int, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = str(threads)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        self.index, self.gpu = index, gpu
        with open(logs / f"worker{index}.log", "a") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "arco.study.worker", "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
                text=True,
                bufsize=1,
            )
        self.job: Job | None = None
        self.t0 = 0.0

    def start(self, job: Job, resume: bool, threads: int) -> None:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        spec_path = job.log.with_suffix(".json")
        atomic_write_text(spec_path, json.dumps(job.spec(resume, threads), indent=1))
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{spec_path}\n")
        self.proc.stdin.flush()
        self.job, self.t0 = job, time.perf_counter()

    def finish(self) -> Outcome:
        """Read the busy job's result line (call when the worker's stdout is readable)."""
        assert self.proc.stdout is not None and self.job is not None
        line = self.proc.stdout.readline()
        seconds = time.perf_counter() - self.t0
        log = str(self.job.log)
        self.job = None
        if not line:
            code = self.proc.wait()
            return Outcome("failed", log, seconds, f"the worker process died (exit code {code})")
        result = json.loads(line)
        return Outcome("ok", log, seconds) if result["ok"] else Outcome("failed", log, seconds, result["error"])

    def stop(self, force: bool) -> None:
        if self.proc.poll() is not None:
            return
        if force:
            self.proc.terminate()
        elif self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_local(
    jobs: dict[str, Job],
    workers: int,
    resume: bool,
    report: Reporter,
    gpus: Sequence[str] = (),
    logs: Path | None = None,
) -> dict[str, Outcome]:
    """Run the jobs in up to ``workers`` worker processes, each job as soon as the jobs it needs are done."""
    import select

    slots: list[str | None] = list(gpus[:workers]) if gpus else [None] * workers
    threads = max(1, cpu_cores() // len(slots))
    logs = logs or next(iter(jobs.values())).log.parent
    waiting = dict(jobs)
    outcomes: dict[str, Outcome] = {}
    pool = [_Worker(i, g, threads, logs) for i, g in enumerate(slots[: max(1, min(len(slots), len(jobs)))])]
    clean = False
    try:
        while waiting or any(w.job for w in pool):
            _skip_dependents(waiting, outcomes)
            for jid in [j for j in waiting if j in outcomes]:
                report(_line(waiting.pop(jid), outcomes[jid]))
            ok = {k for k, o in outcomes.items() if o.status == "ok"}
            for w in pool:
                ready = [j for j in waiting.values() if j.needs <= ok]
                if w.job is None and ready:
                    del waiting[ready[0].id]
                    w.start(ready[0], resume, threads)
                    report(f"start   {ready[0].id}" + (f" on GPU {w.gpu}" if w.gpu is not None else ""))
            busy = [w for w in pool if w.job is not None]
            if not busy:
                if waiting:
                    raise ConfigError(f"study jobs wait for each other: {sorted(waiting)}")
                break
            readable, _, _ = select.select([w.proc.stdout for w in busy], [], [], 5.0)
            for w in busy:
                if w.proc.stdout in readable:
                    job = w.job
                    outcomes[job.id] = w.finish()
                    report(_line(job, outcomes[job.id]))
                    if w.proc.poll() is not None and waiting:  # died: replace it while there is work left
                        pool[pool.index(w)] = _Worker(w.index, w.gpu, threads, logs)
        clean = True
    finally:
        for w in pool:  # done: let them exit; interrupted: stop the workers this command started
            w.stop(force=not clean)
    return outcomes


def check_slurm(opts: SlurmOptions) -> None:
    """Fail before anything is planned when the Slurm launcher cannot work here."""
    try:
        import submitit  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "--launcher slurm needs submitit: pip install 'arco[slurm]' (or pip install submitit)"
        ) from exc
    if opts.cluster == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "--launcher slurm: sbatch is not on PATH; run the study on a Slurm login node or use --launcher local"
        )


def run_slurm(
    jobs: dict[str, Job], opts: SlurmOptions, folder: Path, resume: bool, report: Reporter
) -> dict[str, Outcome]:
    """Submit the jobs through submitit, one job array per dependency wave, and wait for them."""
    import submitit

    from arco.study.worker import run_job

    check_slurm(opts)
    executor = submitit.AutoExecutor(folder=str(folder), cluster=opts.cluster)
    params: dict[str, Any] = {
        "timeout_min": int(opts.time_min),
        "cpus_per_task": int(opts.cpus),
        "name": "arco-study",
        "slurm_array_parallelism": int(opts.array_parallelism),
    }
    if opts.cluster == "slurm":
        params["gpus_per_node"] = int(opts.gpus)
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.mem_gb:
        params["mem_gb"] = opts.mem_gb
    if opts.extra:
        params["slurm_additional_parameters"] = dict(e.split("=", 1) for e in opts.extra)
    executor.update_parameters(**params)
    outcomes: dict[str, Outcome] = {}
    for wave in waves(jobs):
        _skip_dependents(jobs, outcomes)
        todo = [j for j in wave if j.id not in outcomes]
        for j in wave:
            if j.id in outcomes:
                report(_line(j, outcomes[j.id]))
        if not todo:
            continue
        t0 = time.perf_counter()
        with executor.batch():
            submitted = [(j, executor.submit(run_job, j.spec(resume, opts.cpus))) for j in todo]
        report(f"submitted {len(submitted)} job(s): " + ", ".join(str(s.job_id) for _, s in submitted))
        for job, sub in submitted:
            try:
                sub.result()
                outcomes[job.id] = Outcome("ok", str(job.log), time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - submitit re-raises the job's error; report it, go on
                first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                outcomes[job.id] = Outcome(
                    "failed", f"{job.log} and {sub.paths.stderr}", time.perf_counter() - t0, first[:300]
                )
            report(_line(job, outcomes[job.id]))
    return outcomes
