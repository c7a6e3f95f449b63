"""The files of a stage folder besides the log and the checkpoints: ``config.yaml``, ``split.json``,
``summary.json`` and ``curves.png``, all written atomically, and the folder's preparation.

``summary.json`` is written last: with ``finished: true`` it marks a finished stage (``arco.pipeline`` skips it on
``--resume``), so the curves are plotted before it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from arco._io import atomic_write_text, remove_stale_temporaries, writing

__all__ = ["data_meta", "finish_stage", "prepare_folder", "write_run_files", "write_summary"]

logger = logging.getLogger(__name__)


def prepare_folder(run_dir: Path) -> None:
    """Create ``run_dir/checkpoints`` and delete temporaries left by a writer killed mid-write (call under the
    folder's lock)."""
    for folder in (run_dir, run_dir / "checkpoints"):
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        for tmp in remove_stale_temporaries(folder):
            logger.info("removed %s, left by an interrupted write", tmp)


def data_meta(data: Any) -> dict[str, Any]:
    """What a checkpoint records about the data (``arco predict`` / ``evaluate`` rebuild the inputs from it)."""
    return {
        "dataset": str(getattr(data, "name", "")),
        "spatial_dims": int(data.spatial_dims),
        "num_classes": int(data.num_classes),
        "class_names": list(getattr(data, "class_names", []) or []),
        "patch_size": [int(s) for s in data.patch_size],
        "normalization": str(getattr(data, "normalization", "")),
        "in_channels": int(getattr(data, "in_channels", 1)),
        "channel_names": list(getattr(data, "channel_names", ()) or ()),
        "channel_normalization": list(getattr(data, "channel_normalization", ()) or ()),
    }


def write_run_files(run_dir: Path, config: dict[str, Any], data: Any) -> None:
    """``config.yaml`` (the resolved config) and ``split.json`` (the data split, when the data has one)."""
    import yaml

    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    if getattr(data, "split", None) is not None:
        atomic_write_text(run_dir / "split.json", json.dumps(data.split, indent=2, default=str))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """``curves.png`` (finished stages) and then ``summary.json``."""
    if summary.get("finished"):
        from arco.evaluation.curves import plot_training_curves

        plot_training_curves(run_dir / "log.csv", run_dir / "curves.png")
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))


def finish_stage(trainer: Any, it: int, wall_seconds: float) -> dict[str, Any]:
    """End a stage run by ``trainer`` (an ``arco.engine.loop._Trainer``) at iteration ``it``: select ``best.pt`` when
    there is no val split, write the curves and ``summary.json``; returns the summary."""
    stage, p, data = trainer.stage, trainer.progress, trainer.data
    finished = it >= stage.schedule.iterations
    if finished and not data.val:  # no validation split: the final weights are the selected ones
        trainer.save_best(it, None)
        p.best_iteration = it
    summary = {
        "stage": stage.name,
        "method": trainer.method.name,
        "iterations": stage.schedule.iterations,
        "completed_iterations": it,
        "finished": finished,
        "best_val_dice": None if p.best_iteration < 0 or not data.val else p.best_dice,
        "best_iteration": p.best_iteration,
        "final_losses": {k: v for k, v in p.last_row.items() if k.startswith("loss")},
        "wall_seconds": round(wall_seconds, 2),
        "device": str(trainer.device),
        "precision": trainer.precision,
        "checkpoints": {
            "last": str(trainer.last_path),
            "best": str(trainer.best_path) if trainer.best_path.is_file() else None,
        },
    }
    write_summary(trainer.run_dir, summary)
    return summary
