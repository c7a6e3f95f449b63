"""Which stages a study trains, where, and in which order: stage fingerprints, shared stages and jobs.

A stage's *fingerprint* hashes everything that determines its weights: the resolved data, model, optimiser,
engine (seed included; :data:`NEUTRAL_ENGINE`, which change no weight, left out) and eval settings, the plug-ins,
the stage's own name, method, schedule, parameters and initialisation, the fingerprint of the stage it starts from,
and the version of the code that shapes its weights (:func:`arco.study.code.code_version`: the package version and
hashes of the shared sources and of its method's). Runs whose stages have the same fingerprint (arms that differ
only in stage-2 settings share stage 1) train that stage once, in ``DIR/shared/<fingerprint>/<stage>``; each run
folder refers to it with a relative symbolic link ``DIR/runs/<arm>/seed<k>/<stage> -> ../../../shared/<fingerprint>/
<stage>``.

Every stage folder records the fingerprint it is trained for (``fingerprint.json``). On ``--resume`` a stage
folder whose record differs from its planned fingerprint (the code or the settings changed since; or a folder of an
arco that kept no record) is moved to ``DIR/stale/`` and the stage trains again (:func:`retire_stale`), with every
stage that starts from it. Stages linked from another study (``--reuse``) are left as they are.

Jobs: one per shared stage (``shared-<fingerprint>``), and one per run holding the run's own stages and its
evaluation (:func:`run_job_id`); a job waits for the jobs that train the stages it needs. A study's tuning runs
(:mod:`arco.study.tune`) have every stage in ``DIR/shared/`` (a main run may later link to them) and no run job (they
are never scored on the test split). A finished stage of another study with the same fingerprint (``reuse``) is
linked instead of trained.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arco._checks import ConfigError
from arco.config import RunConfig, StageConfig, to_dict
from arco.study.spec import RunSpec

__all__ = [
    "StageTask",
    "Job",
    "Plan",
    "fingerprints",
    "make_plan",
    "run_job_id",
    "retire_stale",
    "reusable_stages",
    "stage_finished",
    "evaluation_fresh",
    "waves",
    "write_fingerprints",
]

#: Engine settings that change no weight: how often the loop logs and checkpoints, loader processes, CPU threads,
#: the progress bar (the study sets threads and progress per job).
NEUTRAL_ENGINE = ("threads", "progress", "log_every", "num_workers", "save_every", "save_every_minutes")
EVALUATION = "evaluation"
FINGERPRINT_FILE = "fingerprint.json"
STALE = "stale"
#: The test evaluation of the last checkpoint (``last.pt``) of a run's last stage, beside the selected one's.
EVALUATION_LAST = "evaluation-last"


def run_job_id(run_key: str) -> str:
    """The id of the job that trains and evaluates run ``run_key`` (``arm/seed0`` -> ``arm-seed0``)."""
    return run_key.replace("/", "-")


def _common(cfg: RunConfig) -> dict[str, Any]:
    data = to_dict(cfg.data)
    if data.get("root"):
        data["root"] = os.path.abspath(data["root"])
    engine = {k: v for k, v in to_dict(cfg.engine).items() if k not in NEUTRAL_ENGINE}
    return {
        "data": data,
        "model": to_dict(cfg.model),
        "optim": to_dict(cfg.optim),
        "engine": engine,
        "eval": to_dict(cfg.eval),
        "plugins": list(cfg.plugins),
    }


def _source(cfg: RunConfig, index: int) -> int | str | None:
    """Index of the stage that stage ``index`` starts from, a checkpoint path, or None (fresh weights)."""
    stage = cfg.stages[index]
    names = [s.name for s in cfg.stages]
    if stage.init == "none" or (stage.init == "previous" and index == 0):
        return None
    if stage.init == "previous":
        return index - 1
    if stage.init in names:
        return names.index(stage.init)
    return os.path.abspath(stage.init)


def fingerprints(cfg: RunConfig) -> list[str]:
    """One hex fingerprint per stage of ``cfg`` (see the module docstring)."""
    from arco.study.code import code_version

    common = _common(cfg)
    out: list[str] = []
    for i, stage in enumerate(cfg.stages):
        source = _source(cfg, i)
        init: Any = None
        if isinstance(source, int):
            init = {"stage": out[source], "checkpoint": stage.init_checkpoint}
        elif isinstance(source, str):
            p = Path(source)
            stat = p.stat() if p.is_file() else None
            init = {
                "path": source,
                "size": stat.st_size if stat else None,
                "mtime_ns": stat.st_mtime_ns if stat else None,
            }
        item = {
            **common,
            "stage": {
                "name": stage.name,
                "method": stage.method,
                "schedule": to_dict(stage.schedule),
                "params": to_dict(stage.params),
            },
            "init": init,
            "code": code_version(stage.method),
        }
        text = json.dumps(item, sort_keys=True, default=str)
        out.append(hashlib.sha256(text.encode()).hexdigest()[:16])
    return out


@dataclass
class StageTask:
    """Train stage ``stage`` of ``config`` in ``home/<stage>`` (``home`` holds links to the stages it needs)."""

    fingerprint: str
    stage: str
    home: Path
    config: RunConfig
    runs: list[str] = field(default_factory=list)
    shared: bool = False
    reused: bool = False

    @property
    def folder(self) -> Path:
        return self.home / self.stage


@dataclass
class Job:
    """What one worker process does: stage tasks in order, then (for a run job) the run's evaluation."""

    id: str
    tasks: list[StageTask]
    run: RunSpec | None = None
    needs: set[str] = field(default_factory=set)
    log: Path = Path()

    def spec(self, resume: bool, threads: int) -> dict[str, Any]:
        """The JSON-safe description a worker runs (:func:`arco.study.worker.run_job`)."""

        def config(cfg: RunConfig) -> dict[str, Any]:
            d = to_dict(cfg)
            d["engine"]["threads"] = int(threads)
            d["engine"]["progress"] = False
            return d

        tasks = [
            {"kind": "stage", "stage": t.stage, "home": str(t.home), "config": config(t.config)} for t in self.tasks
        ]
        if self.run is not None:
            tasks.append(
                {
                    "kind": "evaluate",
                    "run": str(self.run.folder),
                    "stage": self.run.config.stages[-1].name,
                    "config": config(self.run.config),
                }
            )
        return {"id": self.id, "log": str(self.log), "resume": bool(resume), "tasks": tasks}


@dataclass
class Plan:
    """The study's runs, its stage tasks by fingerprint and its jobs by id."""

    out: Path
    runs: list[RunSpec]
    stages: dict[str, StageTask]
    jobs: dict[str, Job]
    run_fingerprints: dict[str, list[str]]

    def shared(self) -> list[StageTask]:
        """Stages trained in ``DIR/shared/`` (not those linked from another study)."""
        return [t for t in self.stages.values() if t.shared and not t.reused]

    def reused(self) -> list[StageTask]:
        """Stages linked from another study's finished stage."""
        return [t for t in self.stages.values() if t.reused]

    def run_job(self, run: RunSpec) -> Job:
        """The job of ``run``."""
        return self.jobs[run_job_id(run.key)]


def _link(link: Path, target: Path) -> None:
    """Make ``link`` a relative symbolic link to ``target`` (replacing an older link)."""
    rel = os.path.relpath(target, link.parent)
    if link.is_symlink():
        if os.readlink(link) == rel:
            return
        link.unlink()
    elif link.exists():
        raise ConfigError(
            f"{link} is a trained stage folder, but this study now shares that stage from {target}: the study "
            "definition changed since it was trained; use a new --out"
        )
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(rel, target_is_directory=True)


def _truncate(cfg: RunConfig, index: int) -> RunConfig:
    """The config a shared stage is trained with: the run's stages up to this one (its config.yaml shows no
    settings of later stages, which the runs sharing it do not agree on)."""
    import dataclasses

    return dataclasses.replace(cfg, stages=cfg.stages[: index + 1])


def make_plan(
    runs: Sequence[RunSpec],
    out: str | Path,
    link: bool = True,
    tuning: Collection[str] = (),
    reuse: Mapping[str, Path] | None = None,
) -> Plan:
    """Fingerprint every stage, decide where each is trained, create the folder links and group tasks into jobs.

    Args:
        tuning: keys of the tuning runs among ``runs`` (their stages go to ``DIR/shared/``; no run job).
        reuse: fingerprint -> finished stage folder of another study (:func:`reusable_stages`), linked instead of
            trained unless this study already trained that stage itself.
    """
    out = Path(out).resolve()
    reuse = reuse or {}
    fps = {r.key: fingerprints(r.config) for r in runs}
    users: dict[str, list[tuple[RunSpec, int]]] = {}
    for r in runs:
        for i, fp in enumerate(fps[r.key]):
            users.setdefault(fp, []).append((r, i))
    stages: dict[str, StageTask] = {}
    for fp, used in users.items():
        run, i = used[0]
        name = run.config.stages[i].name
        shared = len(used) > 1 or any(r.key in tuning for r, _ in used)
        home = out / "shared" / fp if shared else run.folder
        cfg = _truncate(run.config, i) if shared else run.config
        here = home / name
        reused = fp in reuse and not (here.exists() and not here.is_symlink())  # trained here: keep it
        if reused:
            home = reuse[fp].parent
        stages[fp] = StageTask(fp, name, home, cfg, [r.key for r, _ in used], shared, reused)
    jobs: dict[str, Job] = {}
    owner: dict[str, str] = {}
    for fp, task in stages.items():
        if task.shared and not task.reused:
            jobs[f"shared-{fp}"] = Job(f"shared-{fp}", [task], log=out / "logs" / f"shared-{fp}.log")
            owner[fp] = f"shared-{fp}"
    for r in runs:
        if r.key in tuning:
            continue
        own = [stages[fp] for fp in fps[r.key] if not stages[fp].shared and not stages[fp].reused]
        job_id = run_job_id(r.key)
        jobs[job_id] = Job(job_id, own, run=r, log=out / "logs" / f"{job_id}.log")
        for t in own:
            owner[t.fingerprint] = job_id
    for job in jobs.values():
        deps = [d for t in job.tasks for d in _upstream(t, stages)]
        if job.run is not None:
            deps += fps[job.run.key]
        job.needs |= {owner[d] for d in deps if d in owner and owner[d] != job.id}
    plan = Plan(out, list(runs), stages, jobs, fps)
    if link:
        _make_links(plan)
    return plan


def _upstream(task: StageTask, stages: dict[str, StageTask]) -> list[str]:
    cfg = task.config
    names = [s.name for s in cfg.stages]
    index = names.index(task.stage)
    fps = fingerprints(cfg)
    source = _source(cfg, index)
    return [fps[source]] if isinstance(source, int) else []


def _make_links(plan: Plan) -> None:
    """Run folders link to their shared stages; shared homes link to the stages their stage starts from."""
    for run in plan.runs:
        run.folder.mkdir(parents=True, exist_ok=True)
        for fp, stage in zip(plan.run_fingerprints[run.key], run.config.stages):
            task = plan.stages[fp]
            if task.home != run.folder:
                _link(run.folder / stage.name, task.folder)
            elif (run.folder / stage.name).is_symlink():  # shared before, trained in place now
                (run.folder / stage.name).unlink()
    for task in plan.shared():
        task.home.mkdir(parents=True, exist_ok=True)
        for dep in _upstream(task, plan.stages):
            _link(task.home / plan.stages[dep].stage, plan.stages[dep].folder)


def _record(task: StageTask) -> dict[str, Any]:
    from arco.study.code import code_version, git_commit

    method = task.config.stage(task.stage).method
    return {
        "fingerprint": task.fingerprint,
        "stage": task.stage,
        "method": method,
        "code": code_version(method),
        "git_commit": git_commit(),
    }


def _recorded(folder: Path) -> str | None:
    try:
        return str(json.loads((folder / FINGERPRINT_FILE).read_text())["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def retire_stale(plan: Plan) -> list[tuple[StageTask, Path]]:
    """Move every stage folder that holds training for another fingerprint than the planned one (or for none it
    recorded) to ``DIR/stale/``, so that the stage trains again. Returns ``[(task, where it went)]``."""
    from arco._io import writing

    moved = []
    for task in plan.stages.values():
        folder = task.folder
        if task.reused or folder.is_symlink() or not folder.is_dir():
            continue
        trained = [p for p in folder.iterdir() if p.name != FINGERPRINT_FILE]
        recorded = _recorded(folder)
        if not trained or recorded == task.fingerprint:
            continue
        base = plan.out / STALE / f"{os.path.relpath(folder, plan.out).replace(os.sep, '-')}-{recorded or 'unrecorded'}"
        target, k = base, 1
        while target.exists():
            target, k = base.with_name(f"{base.name}.{k}"), k + 1
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(target)
        moved.append((task, target))
    return moved


def write_fingerprints(plan: Plan) -> None:
    """Record in every stage folder the fingerprint it is trained for (``fingerprint.json``)."""
    from arco._io import atomic_write_text

    for task in plan.stages.values():
        if not task.reused and _recorded(task.folder) != task.fingerprint:
            task.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(task.folder / FINGERPRINT_FILE, json.dumps(_record(task), indent=2))


def reusable_stages(studies: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """Fingerprint -> finished stage folder, from other study folders' ``plan.json`` (``arco study --reuse``).

    Raises:
        ConfigError: a folder holds no ``plan.json`` (not a study folder).
    """
    out: dict[str, Path] = {}
    for study in studies:
        path = Path(study) / "plan.json"
        if not path.is_file():
            raise ConfigError(f"--reuse {study}: no plan.json there; give the folder of an earlier `arco study` run")
        plan = json.loads(path.read_text())
        folders = [(fp, Path(r["folder"]) / stage) for r in plan.get("runs", {}).values()
                   for stage, fp in r.get("stages", {}).items()]  # fmt: skip
        folders += [(fp, Path(s["folder"])) for fp, s in plan.get("shared", {}).items()]
        for fp, folder in folders:
            if fp not in out and stage_finished(folder):
                out[fp] = Path(os.path.realpath(folder))
    return out


def stage_finished(folder: Path) -> bool:
    """True when ``folder/summary.json`` says the stage finished."""
    path = folder / "summary.json"
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text()).get("finished"))
    except (json.JSONDecodeError, OSError):
        return False


def evaluated_checkpoint(run_folder: Path, stage: StageConfig | str, which: str = "best") -> Path:
    """The checkpoint of the run's last stage that an evaluation scores: the selected one (``best``: best.pt, or
    last.pt without validation) or ``last`` (last.pt)."""
    from arco.checkpoint import resolve_checkpoint

    name = stage if isinstance(stage, str) else stage.name
    return resolve_checkpoint(run_folder / name) if which == "best" else run_folder / name / "checkpoints" / "last.pt"


def evaluation_fresh(run_folder: Path, stage: StageConfig | str, which: str = "best") -> bool:
    """True when ``run/evaluation`` (``which="last"``: ``run/evaluation-last``) holds the test evaluation of the
    run's current selected (last) checkpoint."""
    folder = run_folder / (EVALUATION if which == "best" else EVALUATION_LAST)
    source = folder / "source.json"
    if not source.is_file() or not (folder / "per_case.csv").is_file():
        return False
    try:
        ckpt = evaluated_checkpoint(run_folder, stage, which)
        recorded = json.loads(source.read_text())
    except Exception:  # noqa: BLE001 - any unreadable cache means: evaluate again
        return False
    return recorded == checkpoint_stamp(ckpt)


def checkpoint_stamp(ckpt: Path) -> dict[str, Any]:
    """What identifies a checkpoint file's content cheaply: its resolved path, size and modification time."""
    st = ckpt.stat()
    return {"checkpoint": str(ckpt.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def job_done(job: Job) -> bool:
    """Every stage of the job finished (and, for a run job, its evaluation is up to date)."""
    if not all(stage_finished(t.folder) for t in job.tasks):
        return False
    if job.run is None:
        return True
    last = job.run.config.stages[-1]
    return all(stage_finished(job.run.folder / s.name) for s in job.run.config.stages) and all(
        evaluation_fresh(job.run.folder, last, which) for which in ("best", "last")
    )


def waves(jobs: dict[str, Job]) -> list[list[Job]]:
    """Jobs in dependency levels: every job comes after the jobs it needs."""
    level: dict[str, int] = {}

    def depth(job_id: str, seen: tuple[str, ...] = ()) -> int:
        if job_id in seen:
            raise ConfigError(f"study jobs form a cycle through {job_id}")
        if job_id not in level:
            level[job_id] = 1 + max((depth(n, (*seen, job_id)) for n in jobs[job_id].needs), default=-1)
        return level[job_id]

    for j in jobs:
        depth(j)
    out: list[list[Job]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for j, lv in level.items():
        out[lv].append(jobs[j])
    return out
