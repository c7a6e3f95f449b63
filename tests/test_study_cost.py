"""The CPU-time estimate of ``arco study --dry-run`` (arco.study.cost), by hand."""

from __future__ import annotations

import dataclasses

import pytest

from arco.config import load_config
from arco.study.cost import (
    DEFAULT_SECONDS,
    EVALUATION_SECONDS,
    SECONDS_PER_ITERATION,
    VALIDATION_SECONDS,
    estimate,
    stage_seconds,
)


def _task(cfg, stage):
    return type("Task", (), {"config": cfg, "stage": stage})()


def test_stage_seconds_by_hand():
    cfg = load_config("demo", ["engine.val_every=50"])  # ARCO: 400 + 1400 iterations, 64 x 64, batch 2 + 2
    seconds, known = stage_seconds(cfg, "finetune")
    assert known and seconds == pytest.approx(1400 * SECONDS_PER_ITERATION["arco-finetune"] + 29 * VALIDATION_SECONDS)
    big = load_config("demo", ["data.patch_size=[128,128]", "engine.val_every=0"], method="supervised")
    seconds, _ = stage_seconds(big, "supervised")
    assert seconds == pytest.approx(4 * (1800 * SECONDS_PER_ITERATION["supervised"] + VALIDATION_SECONDS))


def test_estimate_sums_stages_names_unknown_methods_and_divides_by_parallel_jobs():
    cfg = load_config("demo", ["engine.val_every=0"], method="supervised")
    odd = dataclasses.replace(cfg, stages=(dataclasses.replace(cfg.stages[0], method="not-in-the-table"),))
    one = 1800 * SECONDS_PER_ITERATION["supervised"] + VALIDATION_SECONDS
    e = estimate([_task(cfg, "supervised"), _task(odd, "supervised")], evaluations=2, jobs=4, cores=2)
    assert e["unknown"] == ["not-in-the-table"] and e["stages"] == 2 and not e["gpu"]
    assert e["by_method"]["not-in-the-table"] == pytest.approx(1800 * DEFAULT_SECONDS + VALIDATION_SECONDS)
    assert e["wall_seconds"] == pytest.approx(e["cpu_seconds"] / 2)  # 4 jobs on 2 cores: 2 at a time
    assert e["cpu_seconds"] == pytest.approx(one + e["by_method"]["not-in-the-table"] + 2 * EVALUATION_SECONDS)
