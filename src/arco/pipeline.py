"""Running a configuration: build the data once, then train its stages in order, each in ``RUN/<stage>/``.

Below the CLI and the demo, above the engine: the only place that turns a :class:`~arco.config.RunConfig` into
engine calls. A stage starts from the checkpoint its ``init`` names (by default the stage before it), loading the
components its method declares in ``init_components``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from arco._checks import ArcoError, CheckpointError, ConfigError
from arco.config import RunConfig, StageConfig, to_dict

__all__ = ["train", "stage_init", "build_stage_method"]

logger = logging.getLogger(__name__)


def stage_init(cfg: RunConfig, stage: StageConfig, out: Path) -> Path | None:
    """The checkpoint ``stage`` starts from (``None`` = fresh weights)."""
    names = [s.name for s in cfg.stages]
    index = names.index(stage.name)
    if stage.init == "none" or (stage.init == "previous" and index == 0):
        return None
    source = names[index - 1] if stage.init == "previous" else stage.init
    if source in names:
        if names.index(source) >= index:
            raise ConfigError(f"stage {stage.name!r} cannot start from {source!r}, which comes after it")
        return out / source / "checkpoints" / f"{stage.init_checkpoint}.pt"
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"{stage.name}.init={source!r} is neither a stage of this run ({', '.join(names)}) nor a checkpoint "
            "file; use 'previous', 'none', a stage name or the path of a .pt file"
        )
    return path


def build_stage_method(cfg: RunConfig, stage: StageConfig, data: Any) -> Any:
    """Seed the global generators and build the stage's method for ``data`` (input channels from the data)."""
    from arco.engine import seed_everything
    from arco.methods import build_method

    seed_everything(cfg.engine.seed)
    model = dataclasses.replace(cfg.model, in_channels=int(getattr(data, "in_channels", cfg.model.in_channels)))
    return build_method(stage.method, stage.params, data.num_classes, data.spatial_dims, model)


def _check_unlabeled(cfg: RunConfig, selected: list[str], data: Any) -> None:
    """Fail before any training when a semi-supervised stage has no unlabeled images to learn from."""
    from arco.methods import get_method

    unlabeled = getattr(data, "unlabeled", None)
    if unlabeled is not None and len(unlabeled) > 0:
        return
    for stage in cfg.stages:
        if stage.name in selected and get_method(stage.method).needs_unlabeled:
            raise ArcoError(
                f"stage {stage.name!r} (method {stage.method!r}) needs unlabeled images, but the unlabeled set is "
                f"empty: every training case of {cfg.data.dataset!r} is labeled (data.labeled={cfg.data.labeled!r}). "
                "Train the supervised method (arco train --method supervised), lower data.labeled, or add "
                "unlabeled cases"
            )


def _finished(stage_dir: Path, stage: StageConfig) -> dict[str, Any] | None:
    """The summary of ``stage`` when ``stage_dir`` holds it finished (``summary.json`` is its last write), else None.

    A summary of another method or length (the config changed) or an unreadable one does not count: the stage then
    resumes from its ``last.pt``, which checks that it belongs to this stage.
    """
    path = stage_dir / "summary.json"
    try:
        prior = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        logger.warning("%s: cannot read %s (%s); resuming the stage instead of skipping it", stage.name, path, exc)
        return None
    same = prior.get("method") == stage.method and prior.get("iterations") == stage.schedule.iterations
    return prior if prior.get("finished") and same else None


def train(
    cfg: RunConfig,
    out: str | os.PathLike,
    only: tuple[str, ...] | list[str] | None = None,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    data: Any = None,
) -> dict[str, Any]:
    """Train the run's stages (or only those named in ``only``), each in ``out/<stage>``.

    Args:
        cfg: the run configuration.
        out: run folder.
        only: stage names to run (default: all, in order).
        resume: continue every stage from its ``last.pt``; finished stages are skipped. A run killed at any moment
            (SIGKILL included) resumes this way to the weights an uninterrupted run reaches (deterministic CPU).
        init_from: checkpoint that initialises the first stage run (overrides its ``init``).
        data: an already built :class:`arco.data.SegmentationData` (default: ``build_data(cfg.data)``).

    Returns:
        ``{stage name: summary}``.

    Under ``torch.distributed`` every rank calls ``train``; rank 0 alone locks and writes (see
    :mod:`arco.engine.distributed`).

    Raises:
        arco._lock.FolderLockedError: another process is training into ``out`` (the lock is held for the call).
    """
    from arco.engine.distributed import main_first, main_lock
    from arco.methods import load_plugins

    load_plugins(cfg.plugins)  # idempotent; a config built in another process names its plug-ins here
    names = [s.name for s in cfg.stages]
    selected = list(only) if only else names
    for name in selected:
        if name not in names:
            raise ConfigError(f"this run has no stage {name!r}; its stages: {', '.join(names)}")
    out = Path(out)
    with main_lock(out, "run folder"):  # before building the data: a second process fails at once
        if data is None:
            from arco.data import build_data

            data = main_first(lambda: build_data(cfg.data))  # rank 0 may generate a phantom first
        _check_unlabeled(cfg, selected, data)
        return _train_stages(cfg, out, [s for s in cfg.stages if s.name in selected], resume, init_from, data)


def _train_stages(cfg: RunConfig, out: Path, stages: list[StageConfig], resume: bool,
                  init_from: str | os.PathLike | None, data: Any) -> dict[str, Any]:  # fmt: skip
    from arco.engine import StageSpec, fit

    resolved = to_dict(cfg)
    results: dict[str, Any] = {}
    for i, stage in enumerate(stages):
        stage_dir = out / stage.name
        prior = _finished(stage_dir, stage) if resume else None
        if prior is not None:
            logger.info("%s: already finished in %s; skipping", stage.name, stage_dir)
            results[stage.name] = prior
            continue
        init = Path(init_from) if (init_from is not None and i == 0) else stage_init(cfg, stage, out)
        if init is not None and not init.is_file():
            raise CheckpointError(
                f"stage {stage.name!r} starts from {init}, which does not exist: train the stage it comes from "
                f"first, pass --init CKPT, or set {stage.name}.init=none"
            )
        method = build_stage_method(cfg, stage, data)
        spec = StageSpec(stage.name, stage.schedule, init_from=init)
        results[stage.name] = fit(
            method,
            data,
            spec,
            optim=cfg.optim,
            engine=cfg.engine,
            run_dir=stage_dir,
            config=resolved,
            resume=resume,
            eval_compat=cfg.eval.compat,
        )
    return results


def evaluate_test(ckpt: str | os.PathLike, data: Any, cfg: RunConfig, out_dir: Any = None, **kwargs: Any) -> Any:
    """Score the predictor in checkpoint ``ckpt`` on ``data.test`` on the config's device, with the config's
    evaluation conventions (one place for the demo and the studies); ``kwargs`` go to ``evaluate_model``."""
    from arco._device import resolve_device
    from arco.checkpoint import load_predictor
    from arco.evaluation.report import evaluate_model

    device = resolve_device(cfg.engine.device)
    model, _ = load_predictor(ckpt, map_location=device)
    return evaluate_model(
        model.to(device),
        data.test,
        data.num_classes,
        data.spatial_dims,
        data.patch_size,
        device=device,
        class_names=data.class_names,
        compat=cfg.eval.compat,
        out_dir=out_dir,
        **kwargs,
    )
