"""Tiny study files shared by the study tests (phantom 6 subjects at 32x32, a few iterations)."""

from __future__ import annotations

from pathlib import Path

import yaml

#: Every run of a tiny study: small phantom, small heads, a few iterations, validation every 2 iterations.
TINY_SET = [
    "data.subjects=6",
    "data.image_size=32",
    "data.patch_size=[32,32]",
    "model.dim=8",
    "model.hidden_dim=8",
    "schedule.iterations=3",
    "pretrain.iterations=2",
    "finetune.iterations=3",
    "pretrain.queue_size=4",
    "finetune.num_queries=8",
    "finetune.num_negatives=8",
    "finetune.bank_size=16",
    "finetune.nn_bank=4",
    "finetune.nn_k=2",
    "engine.val_every=2",
    "engine.log_every=1",
]


def write_study(path: Path, data_root: Path, grid: dict, seeds=(0,), extra=(), **keys) -> Path:
    """A study YAML on the ``demo`` base with :data:`TINY_SET` and the phantom under ``data_root``."""
    study = {
        "description": "tiny test study",
        "base": "demo",
        "set": [f"data.root={data_root}", *TINY_SET, *extra],
        "seeds": list(seeds),
        "grid": grid,
        **keys,
    }
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path
