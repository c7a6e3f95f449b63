"""The CLI smoke run of every method's tests: ``arco train --method METHOD`` for a few iterations on a tiny phantom,
then ``arco evaluate`` of its last stage, with the checks every method must pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch

from _tiny import TINY_2D, TINY_3D, make_phantom, read_log
from arco.checkpoint import load_checkpoint, load_predictor
from arco.cli import main

ENGINE = [
    "schedule.batch_labeled=2",
    "schedule.batch_unlabeled=2",
    "engine.device=cpu",
    "engine.threads=1",
    "engine.log_every=1",
    "engine.progress=false",
]


class Smoke(NamedTuple):
    """What a smoke run left: the run folder, the last stage's log rows, the evaluation summary and ``last.pt``."""

    run: Path
    rows: list[dict[str, str]]
    summary: dict[str, Any]
    state: dict[str, Any]


def smoke(
    tmp_path: Path,
    method: str,
    spatial_dims: int = 2,
    extra: tuple[str, ...] | list[str] = (),
    iterations: int = 3,
    split: str | None = None,
) -> Smoke:
    """Train ``method`` (every stage ``iterations`` long, validated at its end; ``extra`` more ``--set`` values) and
    evaluate its last stage (on ``split``, default test). Checks that every stage finished, that the last stage's
    checkpoint is that stage's method at its last iteration, that the Dice is a fraction and that the stored
    network predicts the right shape."""
    from arco.methods import get_recipe

    config, tiny = ("phantom2d", TINY_2D) if spatial_dims == 2 else ("phantom3d", TINY_3D)
    sets = [*tiny, *ENGINE, f"engine.val_every={iterations}", f"data.root={tmp_path / 'data'}", *extra]
    run = tmp_path / "run"
    args = ["train", "--config", config, "--method", method, "--iterations", str(iterations), "--out", str(run)]
    make_phantom(config, sets)
    assert main([*args, *[a for kv in sets for a in ("--set", kv)]]) == 0
    stages = get_recipe(method).stages
    for stage in stages:
        summary = json.loads((run / stage.name / "summary.json").read_text())
        assert summary["completed_iterations"] == iterations and summary["finished"], summary
    last = run / stages[-1].name
    state = load_checkpoint(last / "checkpoints" / "last.pt")
    assert state["method"] == stages[-1].method and state["iteration"] == iterations
    assert state["data"]["spatial_dims"] == spatial_dims
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(last), "--out", str(out), *(["--split", split] if split else [])]) == 0
    result = json.loads((out / "summary.json").read_text())
    assert 0.0 <= result["mean"]["dice"] <= 1.0
    model, meta = load_predictor(last)
    size = (1, 1, *([32] * spatial_dims))
    assert model(torch.zeros(size)).logits.shape == (1, meta["data"]["num_classes"], *size[2:])
    return Smoke(run, read_log(last / "log.csv"), result, state)
