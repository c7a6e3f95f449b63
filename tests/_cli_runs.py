"""Train a method for a few iterations through the CLI on a tiny phantom, then evaluate its last stage through the
CLI (the smoke tests of the baseline methods)."""

from __future__ import annotations

import json
from pathlib import Path

from _tiny import make_phantom
from arco.cli import main

TINY_2D = [
    "data.subjects=6",
    "data.image_size=32",
    "data.patch_size=[32, 32]",
    "data.labeled=2",
    "model.dim=8",
    "model.hidden_dim=8",
]
TINY_3D = [
    "data.subjects=4",
    "data.image_size=32",
    "data.patch_size=[32, 32, 32]",
    "data.labeled=1",
    "model.n_filters=4",
    "model.dim=8",
    "model.hidden_dim=8",
]
ENGINE = [
    "schedule.batch_labeled=2",
    "schedule.batch_unlabeled=2",
    "engine.device=cpu",
    "engine.log_every=1",
    "engine.progress=false",
]


def train_and_evaluate(
    tmp_path: Path, method: str, spatial_dims: int = 2, extra: tuple[str, ...] = (), iterations: int = 2
) -> tuple[Path, dict]:
    """``arco train --method METHOD`` on phantom2d/3d (every stage ``iterations`` long, validated at its end), then
    ``arco evaluate`` of the last stage. Returns the run folder and the evaluation summary."""
    config, tiny = ("phantom2d", TINY_2D) if spatial_dims == 2 else ("phantom3d", TINY_3D)
    sets = [*tiny, *ENGINE, f"engine.val_every={iterations}", f"data.root={tmp_path / 'data'}", *extra]
    run = tmp_path / "run"
    args = ["train", "--config", config, "--method", method, "--iterations", str(iterations), "--out", str(run)]
    make_phantom(config, sets)
    assert main([*args, *[a for kv in sets for a in ("--set", kv)]]) == 0
    from arco.methods import get_recipe

    last = get_recipe(method).stages[-1].name
    for stage in get_recipe(method).stages:
        summary = json.loads((run / stage.name / "summary.json").read_text())
        assert summary["completed_iterations"] == iterations and summary["finished"], summary
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run / last), "--out", str(out), "--split", "val"]) == 0
    result = json.loads((out / "summary.json").read_text())
    return run, result
