"""A study job, run in a worker process (``python -m arco.study.worker JOB.json``) or a Slurm job (submitit).

A job trains its stages in order with :func:`arco.pipeline.train` (each stage in ``home/<stage>``, resumed from
``last.pt`` when asked) and, for a run job, evaluates the run's selected checkpoint (best on validation) of its
last stage on the test split once, caching the result in ``RUN/evaluation/``, and its last checkpoint (``last.pt``)
likewise in ``RUN/evaluation-last/``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text
from arco.study.plan import EVALUATION, EVALUATION_LAST, checkpoint_stamp, evaluated_checkpoint, evaluation_fresh

__all__ = ["run_job", "evaluate_run", "serve", "main"]

logger = logging.getLogger("arco.study")


def evaluate_run(cfg: Any, run: Path, stage: str, data: Any, which: str = "best") -> dict[str, Any]:
    """Evaluate ``run/<stage>``'s selected checkpoint (``which="last"``: its last.pt) on ``data.test`` into
    ``run/evaluation`` (``run/evaluation-last``), cached: nothing is done when the cache matches the checkpoint.
    Returns the evaluation summary."""
    from arco._checks import ArcoError
    from arco.pipeline import evaluate_test

    out = run / (EVALUATION if which == "best" else EVALUATION_LAST)
    if evaluation_fresh(run, stage, which):
        logger.info("%s: evaluation of the %s checkpoint is up to date", run, which)
        return json.loads((out / "summary.json").read_text())
    if not data.test:
        raise ArcoError(f"{run}: the test split of {cfg.data.dataset!r} is empty; a study needs test cases")
    ckpt = evaluated_checkpoint(run, stage, which)
    (out / "source.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    overlays = 3 if which == "best" else 0
    result = evaluate_test(ckpt, data, cfg, out, overlays=overlays, batch_size=cfg.engine.val_batch)
    atomic_write_text(out / "source.json", json.dumps(checkpoint_stamp(ckpt), indent=2))
    logger.info(
        "%s: test mean Dice %.4f over %d cases (%s, %.1f s)",
        run, result.summary["mean"]["dice"], result.summary["num_cases"], ckpt.name, time.perf_counter() - t0,
    )  # fmt: skip
    return result.summary


def run_job(spec: dict[str, Any], log_to_file: bool = True) -> dict[str, Any]:
    """Run one job description (:meth:`arco.study.plan.Job.spec`); returns ``{"id", "seconds"}``.

    Raises whatever the training or evaluation raised (after logging it to the job's log).
    """
    import torch

    from arco.config import build_config
    from arco.data import build_data
    from arco.pipeline import train

    handler = None
    if log_to_file:
        Path(spec["log"]).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(spec["log"])
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logging.getLogger("arco").addHandler(handler)
        logging.getLogger("arco").setLevel(logging.INFO)
    t0 = time.perf_counter()
    data_cache: dict[str, Any] = {}
    logger.info("job %s: started (pid %d)", spec["id"], os.getpid())
    try:
        for task in spec["tasks"]:
            cfg = build_config(task["config"])
            if cfg.engine.threads > 0:
                torch.set_num_threads(cfg.engine.threads)
            key = json.dumps(task["config"]["data"], sort_keys=True)
            if key not in data_cache:
                data_cache[key] = build_data(cfg.data)
            data = data_cache[key]
            if task["kind"] == "stage":
                logger.info("job %s: stage %s in %s", spec["id"], task["stage"], task["home"])
                train(cfg, task["home"], only=(task["stage"],), resume=spec["resume"], data=data)
            else:
                for which in ("best", "last"):
                    evaluate_run(cfg, Path(task["run"]), task["stage"], data, which)
    except BaseException:
        logger.exception("job %s failed", spec["id"])
        raise
    finally:
        if handler is not None:
            logging.getLogger("arco").removeHandler(handler)
            handler.close()
    return {"id": spec["id"], "seconds": round(time.perf_counter() - t0, 1)}


def _exit_with_parent() -> None:
    """Stop this worker when the process that started it goes away (the study was killed)."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def serve() -> int:
    """The local launcher's warm worker: read job-file paths from stdin, run each, answer one JSON line per job on
    stdout. Everything the job prints goes to stderr (the worker log) and to the job's own log."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the answers
    _exit_with_parent()
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        spec = json.loads(Path(path).read_text())
        try:
            result = {"id": spec["id"], "ok": True, **run_job(spec)}
        except Exception as exc:  # noqa: BLE001 - logged with its traceback; the launcher reports the job
            result = {"id": spec["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        answers.write(json.dumps(result) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m arco.study.worker --serve`` (the local launcher's worker) or ``... JOB.json`` (one job)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m arco.study.worker (--serve | JOB.json)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args[0] == "--serve":
        return serve()
    spec = json.loads(Path(args[0]).read_text())
    try:
        run_job(spec, log_to_file=False)
    except Exception:  # noqa: BLE001 - logged with its traceback by run_job; the exit code tells the caller
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    sys.exit(main())
