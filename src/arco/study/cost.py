"""How long a study's training takes on a CPU, before it runs (``arco study NAME --dry-run``).

An estimate, not a measurement: each stage still to train costs its iterations times its method's seconds per
iteration, plus its validations, on one CPU thread at the ``demo`` size (64 x 64 slices, batch 2 + 2, ``model.dim``
64), scaled by the pixels per batch for other sizes. The table was measured on the project's 2-core Xeon CPU
(torch 2.13, one thread per run, two runs at a time as ``--jobs 2`` trains them): supervised, Mean Teacher, UA-MT,
CPS and UniMatch from the tuning phase of ``table1`` (``runs/t1``, December 2026: the fastest of each method's four
1800-iteration runs, its 37 validations taken off); BCP from ``benchmarks/bench_methods.py --size 64 --batch 2`` as
a ratio to ``supervised`` in the same run (a loaded machine, about 20 % of noise); ARCO's two stages after its stage
1, heads and loss became the reference code's (the ``mni-b2`` study of docs/diagnosis.md section 11: stage seconds
per iteration as a ratio to the supervised baseline's in the same study, times the supervised entry), which
``table8 --fast`` matched (937 s measured, 1028 s estimated). Methods not in the table are counted at
:data:`DEFAULT_SECONDS` and named in the estimate. There is no estimate for GPU runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from arco.config import RunConfig

__all__ = [
    "SECONDS_PER_ITERATION",
    "DEFAULT_SECONDS",
    "VALIDATION_SECONDS",
    "EVALUATION_SECONDS",
    "stage_seconds",
    "estimate",
]

#: Training seconds per iteration on one CPU thread at the demo size, by stage method (validation excluded).
SECONDS_PER_ITERATION = {
    "supervised": 0.058,
    "mean-teacher": 0.23,
    "ua-mt": 0.275,
    "cps": 0.24,
    "unimatch": 0.50,
    "bcp-pretrain": 0.031,
    "bcp-selftrain": 0.078,
    "arco-pretrain": 0.15,
    "arco-finetune": 0.21,
}
#: Seconds per iteration of a method not in the table (about three supervised steps).
DEFAULT_SECONDS = 0.2
#: One validation of the demo phantom's validation split (3 subjects, 27 slices of 64 x 64).
VALIDATION_SECONDS = 0.35
#: Pixels per batch of the demo size, the table's unit.
_DEMO_PIXELS = 64 * 64 * 4
#: One test evaluation of a run (the selected and the last checkpoint, the demo phantom's 6 test subjects).
EVALUATION_SECONDS = 3.0


def _scale(cfg: RunConfig, stage: Any) -> float:
    pixels = math.prod(cfg.data.patch_size) * (stage.schedule.batch_labeled + stage.schedule.batch_unlabeled)
    return pixels / _DEMO_PIXELS


def stage_seconds(cfg: RunConfig, name: str) -> tuple[float, bool]:
    """(estimated seconds to train stage ``name`` of ``cfg`` on one CPU thread, whether its method is in the
    table)."""
    stage = cfg.stage(name)
    known = stage.method in SECONDS_PER_ITERATION
    per_it = SECONDS_PER_ITERATION.get(stage.method, DEFAULT_SECONDS)
    its = stage.schedule.iterations
    vals = its // cfg.engine.val_every + 1 if cfg.engine.val_every else 1
    return (its * per_it + vals * VALIDATION_SECONDS) * _scale(cfg, stage), known


def estimate(tasks: Sequence[Any], evaluations: int, jobs: int, cores: int) -> dict[str, Any]:
    """The estimated CPU seconds of ``tasks`` (:class:`arco.study.plan.StageTask` still to train) plus
    ``evaluations`` run evaluations, and the wall time with ``jobs`` parallel jobs (one thread each, at most
    ``cores`` at once, the workers kept busy).

    Returns:
        ``{"stages", "cpu_seconds", "wall_seconds", "by_method": {method: seconds}, "unknown": [methods],
        "gpu": bool}``; on a GPU configuration the seconds are None.
    """
    from arco._device import resolve_device

    by_method: dict[str, float] = {}
    unknown: set[str] = set()
    gpu = False
    for t in tasks:
        if resolve_device(t.config.engine.device).type != "cpu":
            gpu = True
            continue
        seconds, known = stage_seconds(t.config, t.stage)
        method = t.config.stage(t.stage).method
        by_method[method] = by_method.get(method, 0.0) + seconds
        if not known:
            unknown.add(method)
    cpu = sum(by_method.values()) + evaluations * EVALUATION_SECONDS
    parallel = max(1, min(int(jobs), int(cores)))
    return {
        "stages": len(tasks),
        "cpu_seconds": None if gpu else cpu,
        "wall_seconds": None if gpu else cpu / parallel,
        "by_method": by_method,
        "unknown": sorted(unknown),
        "gpu": gpu,
    }
