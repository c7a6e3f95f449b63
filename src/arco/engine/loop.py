"""The one training loop. It knows the :class:`arco.methods.base.Method` contract (docs/design.md), never a method.

Per iteration: batch -> ``method.training_step`` (under autocast) -> backward (GradScaler) -> optimiser step(s) ->
``method.after_optimizer_step``. Every ``log_every`` iterations the device-side sums of the logged scalars are read
once (the only host sync); every ``val_every`` iterations the segmentation network is validated on the val split and
``best.pt`` is kept by validation Dice (never test); ``last.pt``, which holds everything needed to resume
bit-identically, is written at each validation, every ``save_every`` iterations, every ``save_every_minutes`` (at a
log row) and at the end.

A SIGKILL at any moment resumes to the same weights: the write order that makes this exact is described in
:mod:`arco.engine.state`; files are written atomically (:mod:`arco._io`) and the stage folder is locked
(:mod:`arco._lock`).

Under ``torch.distributed`` (``torchrun`` / ``arco train --nproc N``) the same loop runs on every rank: the
trainable modules are wrapped in DDP (:mod:`arco.engine.replicas`) and rank 0 alone writes; the rules are in
:mod:`arco.engine.distributed`. The step's speed options (precision, channels-last, compile) are in
:mod:`arco.engine.perf`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from arco._checks import ArcoError, CheckpointError
from arco._device import resolve_device
from arco.checkpoint import describe_checkpoint, load_checkpoint, save_checkpoint
from arco.engine import distributed as dist
from arco.engine import perf
from arco.engine.config import EngineConfig, OptimConfig, ScheduleConfig, lr_factor
from arco.engine.faults import Faults
from arco.engine.files import data_meta, finish_stage, prepare_folder, write_run_files
from arco.engine.logger import RunLogger, log_columns
from arco.engine.optim import Optimizers
from arco.engine.replicas import Replicas
from arco.engine.state import (
    all_finite,
    best_from_last,
    check_resumable,
    load_modules,
    module_states,
    own_random_state,
    rng_state,
    set_rng_state,
)
from arco.engine.stream import BatchStream
from arco.methods.base import Method

__all__ = ["fit", "seed_everything", "StageSpec"]

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators (weight initialisation, dropout)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - global state on purpose
    torch.manual_seed(seed)


@dataclass(frozen=True)
class StageSpec:
    """What ``fit`` trains: the stage's name, its schedule, and where it starts from.

    Attributes:
        name: stage name (folder and ``stage`` column of the log).
        schedule: iterations, batch sizes, learning-rate schedule.
        init_from: checkpoint whose components (those in the method's ``init_components``) initialise the method when
            not resuming.
    """

    name: str
    schedule: ScheduleConfig
    init_from: str | os.PathLike | None = None


@dataclass
class _Progress:
    """Device-side sums of the logged scalars since the last log row, and the best validation so far."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    maxima: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    last_logged: int = 0
    best_dice: float = -math.inf
    best_iteration: int = -1
    last_row: dict[str, Any] = field(default_factory=dict)
    saved_at: float = field(default_factory=time.monotonic)


class _Trainer:
    """One stage of training: set up, resume or initialise, loop, log, validate, checkpoint."""

    def __init__(self, method: Method, data: Any, stage: StageSpec, optim: OptimConfig, engine: EngineConfig,
                 run_dir: Path, config: dict[str, Any], eval_compat: str,
                 faults: Faults | None = None) -> None:  # fmt: skip
        self.method, self.data, self.stage, self.engine = method, data, stage, engine
        self.faults = faults or Faults()
        self.schedule, self.config, self.eval_compat = stage.schedule, config, eval_compat
        self.run_dir = run_dir
        self.last_path, self.best_path = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main = self.rank == 0
        self.device = dist.rank_device(resolve_device(engine.device))
        if engine.threads > 0:
            torch.set_num_threads(engine.threads)
        self.amp_dtype = perf.amp_dtype(engine.precision, self.device)
        self.precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "fp32")
        # The method's generator and the global RNG (dropout) differ per rank: ranks draw different pixels.
        self.seed = engine.seed + self.rank
        if self.world > 1:
            seed_everything(self.seed)
        method.setup(self.device, self.seed, self.schedule.iterations)
        if self.schedule.nesterov is not None:
            optim = dataclasses.replace(optim, nesterov=self.schedule.nesterov)
        self.optimizers = Optimizers(method.param_groups(), optim, self.schedule.lr)
        self.grad_clip = float(getattr(method, "grad_clip", 0.0) if optim.grad_clip is None else optim.grad_clip)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.progress = _Progress()
        self.names = (*method.loss_names, *method.metric_names)
        self.replicas: Replicas | None = None
        self.channels_last = engine.channels_last

    # ------------------------------------------------------------------------------------------- set-up
    def autocast(self) -> contextlib.AbstractContextManager:
        return perf.autocast(self.device, self.amp_dtype)

    def prepare(self) -> None:
        """After the weights are restored: channels-last, compile, and the DDP wrapping under torch.distributed."""
        dims = int(self.data.spatial_dims)
        if self.channels_last:
            perf.channels_last(self.method.components(), dims)
            perf.match_layouts(self.optimizers.optimizers)
        if self.engine.compile:
            perf.compile_forward(self.method.segmentation_network(), self.method.segmenter)
        if self.world > 1:
            self.replicas = Replicas(self.method, self.device, self.engine.sync_bn)

    def restore(self, resume: bool) -> int:
        """Resume from ``last.pt`` (returns its iteration) or initialise from ``stage.init_from`` (returns 0)."""
        if resume and self.last_path.is_file():
            return self._resume(load_checkpoint(self.last_path, map_location="cpu"))
        if resume:
            logger.info("%s: no %s to resume from; starting fresh", self.stage.name, self.last_path)
        if self.stage.init_from is not None:
            self._initialise(Path(self.stage.init_from))
        return 0

    def _resume(self, state: dict[str, Any]) -> int:
        check_resumable(state, self.last_path, self.stage.name, self.method.name)
        load_modules(self.method, state["modules"], None, self.last_path, fix=(
            "the run's config changed since it was written: resume with the config in "
            f"{self.run_dir / 'config.yaml'}, or train into another --out"))  # fmt: skip
        self.method.setup(self.device, self.seed, self.schedule.iterations)
        own = own_random_state(state, self.rank, self.world, self.last_path)
        self.method.load_method_state(own["method_state"])
        self.optimizers.load_state_dict(state["optimizers"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(own["rng"])
        p = self.progress
        p.best_dice, p.best_iteration = state["best_dice"], state["best_iteration"]
        p.last_row = dict(state.get("last_row", {}))
        if self.main and p.best_iteration == state["iteration"]:  # a kill between last.pt and best.pt
            save_checkpoint(best_from_last(state), self.best_path)
        logger.info("%s: resuming from %s at iteration %d", self.stage.name, self.last_path, state["iteration"])
        return int(state["iteration"])

    def _initialise(self, src: Path) -> None:
        state = load_checkpoint(src, map_location="cpu")
        about = f"{src} is {describe_checkpoint(state)}"
        wanted, predict = tuple(self.method.init_components), self.method.segmenter
        loaded = load_modules(self.method, state.get("modules", {}), wanted, src, fix=(
            f"{about}, trained with other model settings; initialise {self.stage.name} from a checkpoint "
            "with the same model.* settings and data dimensions"))  # fmt: skip
        if predict in wanted and predict not in loaded:
            raise CheckpointError(
                f"{about}: it holds no {predict!r} weights to initialise {self.stage.name} "
                f"(method {self.method.name!r}) from (it has {sorted(state.get('modules', {}))}); give a "
                "checkpoint of the stage this one follows"
            )
        self.method.setup(self.device, self.seed, self.schedule.iterations)
        logger.info("%s: initialised %s from %s", self.stage.name, ", ".join(loaded) or "nothing", src)

    # --------------------------------------------------------------------------------------- checkpoints
    def _state(self, iteration: int) -> dict[str, Any]:
        spec = self.method.segmentation_spec()
        weights = {k: v.detach().cpu() for k, v in self.method.segmentation_network().state_dict().items()}
        return {
            "stage": self.stage.name,
            "method": self.method.name,
            "iteration": iteration,
            "config": self.config,
            "data": data_meta(self.data),
            "predictor": {"arch": spec["arch"], "kwargs": spec["kwargs"], "state_dict": weights},
            "modules": module_states(self.method),
        }

    def _check_finite(self, iteration: int, what: Path) -> None:
        if not all_finite(self.method):
            raise ArcoError(
                f"{self.stage.name}: weights became non-finite before iteration {iteration}; not writing {what}. "
                "Lower the schedule's lr, use engine.precision=fp32, or check the data."
            )

    def save_last(self, iteration: int) -> None:
        """Every rank calls it (the ranks' random states are gathered); rank 0 writes ``last.pt``."""
        self._check_finite(iteration, self.last_path)
        own = {"method_state": self.method.method_state(), "rng": rng_state()}
        ranks = dist.gather_objects(own)
        if not self.main:
            return
        p = self.progress
        state = self._state(iteration)
        state.update(
            method_state=own["method_state"],
            optimizers=self.optimizers.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=own["rng"],
            best_dice=p.best_dice,
            best_iteration=p.best_iteration,
            last_row=dict(p.last_row),
        )
        if self.world > 1:
            state["ranks"] = ranks  # each rank's generator and RNG states, to resume every rank exactly
        save_checkpoint(state, self.last_path)
        p.saved_at = time.monotonic()

    def save_best(self, iteration: int, val_dice: float | None) -> None:
        self._check_finite(iteration, self.best_path)
        save_checkpoint({**self._state(iteration), "val_dice": val_dice}, self.best_path)

    # ------------------------------------------------------------------------------------------- the loop
    def step(self, batch: Any, it: int) -> torch.Tensor:
        """One optimiser step; returns the (detached) loss. No host sync (under DDP: collectives only)."""
        batch = batch.to(self.device)
        if self.channels_last:
            batch = perf.channels_last_batch(batch, int(self.data.spatial_dims))
        self.optimizers.set_lr_factor(lr_factor(self.schedule, it))
        if self.replicas is not None:
            self.replicas.begin_step()
        with self.autocast():
            out = self.method.training_step(batch, it)
        loss = out.loss.float()
        if it == self.faults.nan_at:
            loss = loss * float("nan")
        self.optimizers.zero_grad()
        self.scaler.scale(loss).backward()
        if self.replicas is not None:
            self.replicas.sync_grads()
        norm = self.optimizers.step(self.scaler, self.grad_clip)
        if self.replicas is not None:  # before the EMA teachers are updated from the students
            self.replicas.sync_buffers()
        self.method.after_optimizer_step(it)
        self._accumulate({"loss": loss.detach(), "grad_norm": norm, **out.logs}, {"grad_norm_max": norm})
        return loss.detach()

    def _accumulate(self, logs: dict[str, torch.Tensor], maxima: dict[str, torch.Tensor]) -> None:
        p = self.progress
        if p.count == 0:
            unknown = sorted(set(logs) - {"loss", "grad_norm", *self.names})
            if unknown:
                raise ValueError(
                    f"method {self.method.name!r} logged {unknown} but declares loss_names/metric_names "
                    f"{list(self.names)}; declare every logged scalar"
                )
        for k, v in logs.items():
            v = v.detach().float()
            p.sums[k] = p.sums[k] + v if k in p.sums else v
        for k, v in maxima.items():
            v = v.detach().float()
            p.maxima[k] = torch.maximum(p.maxima[k], v) if k in p.maxima else v
        p.count += 1

    def _save_due_by_clock(self) -> bool:
        """``save_every_minutes`` have passed since ``last.pt`` was written (rank 0's clock decides for every rank)."""
        minutes = self.engine.save_every_minutes
        due = minutes > 0 and time.monotonic() - self.progress.saved_at >= 60 * minutes
        return bool(dist.broadcast_object(due)) if minutes > 0 else False

    def report(self, it: int, validate: bool, save: bool, log: RunLogger | None, bar: Any) -> None:
        """Write a log row (one host sync; under DDP one all-gather averages the ranks' means), validate when asked,
        write ``last.pt`` when asked or due by the clock (at every validation) and ``best.pt`` when validation
        improved. Every rank calls it; rank 0 validates and writes."""
        p = self.progress
        local = {k: v.double() / p.count for k, v in p.sums.items()}
        local.update({k: v.double() for k, v in p.maxima.items()})
        check = dist.state_checksum(self.method.components()) if self.world > 1 else torch.zeros(())
        means = dist.reduce_logs(local, check.to(self.device), self.stage.name)
        if not all(math.isfinite(v) for v in means.values()):
            raise ArcoError(
                f"{self.stage.name}: the loss became NaN/inf between iterations {p.last_logged + 1} and {it}; "
                f"training stopped. The last good checkpoint is kept at {self.last_path} "
                f"({'present' if self.last_path.is_file() else 'none written yet'}). Try a lower schedule lr, "
                "engine.precision=fp32, or optim.grad_clip > 0."
            )
        row = {"iteration": it, "stage": self.stage.name, "lr": self.optimizers.lr, **means, "val_dice": None}
        p.sums, p.maxima, p.count, p.last_logged = {}, {}, 0, it
        if bar is not None:
            bar.update(it - bar.n)
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items() if k.startswith("loss")})
        improved = False
        if validate and self.data.val and self.main:  # the other ranks wait in save_last's gather
            row["val_dice"] = self.validate()
            improved = row["val_dice"] > p.best_dice
            if improved:
                p.best_dice, p.best_iteration = row["val_dice"], it
            logger.info(
                "%s: iteration %d val Dice %.4f (best %.4f @ %d)",
                self.stage.name, it, row["val_dice"], p.best_dice, p.best_iteration,
            )  # fmt: skip
        p.last_row = row
        save = save or validate or self._save_due_by_clock()
        if log is not None:
            log.write(row, sync=save)
        if save:  # the write order the resume rule relies on (arco.engine.state)
            self.save_last(it)
            if improved and self.main:
                self.save_best(it, row["val_dice"])

    def validate(self) -> float:
        from arco.evaluation.report import evaluate_model

        d = self.data
        result = evaluate_model(
            self.method.segmentation_network(),
            d.val,
            d.num_classes,
            d.spatial_dims,
            d.patch_size,
            device=self.device,
            amp_dtype=self.amp_dtype,
            compat=self.eval_compat,
            overlays=0,
            batch_size=self.engine.val_batch,
        )
        self.method.set_training(True)
        return float(result.summary["mean"]["dice"])

    def run(self, start: int) -> int:
        """Train from iteration ``start``; returns the iteration reached."""
        eng, sched, stop_at = self.engine, self.schedule, self.faults.stop_at
        stream = BatchStream(
            self.data.labeled,
            self.data.unlabeled if self.method.needs_unlabeled else None,
            sched.batch_labeled,
            sched.batch_unlabeled,
            eng.seed,
            start,
            sched.iterations,
            eng.num_workers,
            pin_memory=self.device.type == "cuda",
            rank=self.rank,
            world=self.world,
        )
        log = RunLogger(self.run_dir, log_columns(self.names), start if start > 0 else None) if self.main else None
        bar = _progress_bar(eng.progress and self.main, sched.iterations, start, self.stage.name)
        self.progress.last_logged = it = start
        self.method.set_training(True)
        try:
            for batch in stream:
                self.step(batch, it)
                it += 1
                at_val = (eng.val_every > 0 and it % eng.val_every == 0) or it == sched.iterations
                at_save = (eng.save_every > 0 and it % eng.save_every == 0) or it == stop_at
                if it % eng.log_every == 0 or at_val or at_save:
                    self.report(it, at_val, at_save, log, bar)
                if stop_at is not None and it >= stop_at:
                    break
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()
        return it


def _progress_bar(enabled: bool, total: int, start: int, stage: str) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=stage, dynamic_ncols=True, leave=True)


@contextlib.contextmanager
def _deterministic(enabled: bool, device: torch.device):
    prev = torch.are_deterministic_algorithms_enabled()
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        if enabled:
            torch.use_deterministic_algorithms(prev)


def fit(
    method: Method,
    data: Any,
    stage: StageSpec,
    *,
    optim: OptimConfig,
    engine: EngineConfig,
    run_dir: str | os.PathLike,
    config: dict[str, Any],
    resume: bool = False,
    eval_compat: str = "default",
    faults: Faults | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``data`` (an :class:`arco.data.SegmentationData`) for one stage.

    Writes ``run_dir/{config.yaml, split.json, log.csv, checkpoints/last.pt, checkpoints/best.pt, summary.json,
    curves.png}``. ``best.pt`` is chosen by mean foreground Dice on the val split (never the test split).

    Args:
        method: a built method (call :func:`seed_everything` before building it).
        stage: name, schedule and initialisation of this stage.
        optim, engine: optimiser and loop settings.
        run_dir: output folder of this stage.
        config: resolved configuration, stored in ``config.yaml`` and in every checkpoint.
        resume: continue from ``run_dir/checkpoints/last.pt`` (bit-identical to an uninterrupted run in
            deterministic CPU mode, even after a SIGKILL at any point: see :mod:`arco.engine.state`); without one the
            stage starts fresh.
        eval_compat: empty-mask policy of the validation metrics.
        faults: test hook (:class:`arco.engine.faults.Faults`): a NaN loss or an early stop at a given iteration.

    Under ``torch.distributed`` every rank calls ``fit`` with the same arguments; the schedule's batch sizes are
    global (each rank trains on ``batch / world_size``), rank 0 alone writes, and every rank returns rank 0's
    summary (:mod:`arco.engine.distributed`).

    Returns:
        The summary dict also written to ``summary.json``.

    Raises:
        ArcoError: the loss became NaN/inf (the last good checkpoint is kept), or bad data/checkpoint.
        arco._lock.FolderLockedError: another process is training into ``run_dir`` (its lock is held for the call).
        arco._io.WriteError: an output cannot be written (disk full, no permission); the previous file is intact.
    """
    if method.needs_unlabeled and getattr(data, "unlabeled", None) is None:
        raise ArcoError(f"method {method.name!r} needs unlabeled images but the dataset provides none")
    dist.check_global_batch(stage.name, stage.schedule, method.needs_unlabeled, engine.sync_bn)
    run_dir = Path(run_dir)
    with dist.main_lock(run_dir, "stage folder"):
        if dist.is_main():
            prepare_folder(run_dir)
        dist.barrier()
        trainer = _Trainer(method, data, stage, optim, engine, run_dir, config, eval_compat, faults)
        start = trainer.restore(resume)
        trainer.prepare()
        if trainer.main:
            write_run_files(run_dir, config, data)
        t0 = time.perf_counter()
        with _deterministic(engine.deterministic, trainer.device):
            it = trainer.run(start)
        summary = finish_stage(trainer, it, time.perf_counter() - t0) if trainer.main else None
        return dist.broadcast_object(summary)
