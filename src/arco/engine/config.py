"""What the engine is told: the optimiser, a stage's schedule (length, batch sizes, learning-rate schedule) and how
the loop runs. Frozen dataclasses validated when a config is read."""

from __future__ import annotations

from dataclasses import dataclass

from arco._checks import choice

__all__ = ["OptimConfig", "ScheduleConfig", "EngineConfig", "lr_factor", "LR_SCHEDULES", "PRECISIONS"]

LR_SCHEDULES = ("poly", "step", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")


def _positive(section: str, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{section}.{key} must be > 0, got {value!r}")


@dataclass(frozen=True)
class OptimConfig:
    """SGD as in the paper and the reference code (docs/methods.md); the learning rate is part of each stage's schedule.

    Attributes:
        momentum: SGD momentum (0.9).
        weight_decay: L2 weight decay (1e-4).
        nesterov: Nesterov momentum (the reference code's stage 2 uses it; SSL4MIS does not).
        grad_clip: max global gradient norm (0 = no clipping); ``None`` (default) = the method's own default
            (``MethodBase.grad_clip``: 0 for every built-in method, as their papers and codes; chosen by measurement,
            docs/diagnosis.md section 11). The norm before clipping is logged (``grad_norm``, ``grad_norm_max``).
    """

    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or (self.grad_clip or 0) < 0:
            raise ValueError(
                "optim: momentum must be in [0, 1), weight_decay and grad_clip >= 0; got "
                f"momentum={self.momentum}, weight_decay={self.weight_decay}, grad_clip={self.grad_clip}"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("optim.nesterov needs optim.momentum > 0")


@dataclass(frozen=True)
class ScheduleConfig:
    """How long a stage trains and on what: iterations, batch sizes and the learning-rate schedule.

    Attributes:
        iterations: optimiser steps (paper / reference code: 30 000 per stage).
        batch_labeled: labeled images per step (paper: 4 in 2D, 2 in 3D).
        batch_unlabeled: unlabeled images per step (ignored by methods that use none).
        lr: base learning rate (0.01).
        lr_schedule: ``poly`` ((1 - t/T)^lr_power, the reference code), ``step`` (x lr_gamma every lr_step
            iterations, the paper) or ``constant``.
        lr_power, lr_step, lr_gamma: parameters of those schedules (0.9, 2500, 0.1).
        nesterov: Nesterov momentum for this stage (``None``: ``optim.nesterov``); the reference code's ARCO stage 2
            uses it, its stage 1 does not.
    """

    iterations: int = 30000
    batch_labeled: int = 4
    batch_unlabeled: int = 4
    lr: float = 0.01
    lr_schedule: str = "poly"
    lr_power: float = 0.9
    lr_step: int = 2500
    lr_gamma: float = 0.1
    nesterov: bool | None = None

    def __post_init__(self) -> None:
        for key in ("iterations", "batch_labeled", "batch_unlabeled", "lr_step"):
            if getattr(self, key) < 1:
                raise ValueError(f"schedule.{key} must be >= 1, got {getattr(self, key)!r}")
        _positive("schedule", lr=self.lr, lr_gamma=self.lr_gamma)
        choice("schedule.lr_schedule", self.lr_schedule, LR_SCHEDULES)


def lr_factor(schedule: ScheduleConfig, iteration: int) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based) of the stage."""
    if schedule.lr_schedule == "poly":
        return (1.0 - min(iteration, schedule.iterations) / schedule.iterations) ** schedule.lr_power
    if schedule.lr_schedule == "step":
        return schedule.lr_gamma ** (iteration // schedule.lr_step)
    return 1.0


@dataclass(frozen=True)
class EngineConfig:
    """How the loop runs (not what it optimises).

    Attributes:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (under DDP ``cuda`` is each
            rank's own GPU).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``: autocast of the training step and validation. ``bf16`` runs on
            CUDA and CPU; ``fp16`` (with a GradScaler) on CUDA only (fp32 elsewhere, with a warning).
        seed: seeds weights, data order, augmentation and the method's sampler generator.
        deterministic: ``torch.use_deterministic_algorithms(True)`` during training (exact resume on CUDA).
        log_every: iterations between log rows / progress updates / the non-finite-loss check (the only host
            syncs of the loop).
        val_every: iterations between validations on the val split (0 = at the end only). Each validation also
            writes ``last.pt`` (the order that keeps ``best.pt`` consistent: docs/training.md, "Checkpoints").
        save_every: iterations between ``last.pt`` checkpoints besides those of the validations (0 = none); a save
            point also writes a log row, so a resumed log is the uninterrupted one.
        save_every_minutes: also write ``last.pt`` at the first log row after this many minutes since the last
            one (0 = off).
        num_workers: data-loader worker processes (0 = load in the main process).
        threads: torch intra-op CPU threads (0 = torch's default).
        progress: show a tqdm progress bar.
        val_batch: slices (2D) or windows (3D) per forward pass in validation.
        sync_bn: under DDP, BatchNorm layers of the trainable modules use the statistics of the global batch
            (SyncBatchNorm) instead of each rank's share of it. Without it BatchNorm running statistics are
            averaged across ranks after every step.
        channels_last: store the networks and the input images channels-last (NHWC in 2D, NDHWC in 3D), which
            tensor-core convolutions prefer under bf16/fp16 on CUDA.
        compile: ``torch.compile`` the forward of the method's predicting network (the student); if compilation
            fails it warns and runs eagerly.
    """

    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    deterministic: bool = False
    log_every: int = 20
    val_every: int = 500
    save_every: int = 0
    save_every_minutes: float = 0.0
    num_workers: int = 0
    threads: int = 0
    progress: bool = True
    val_batch: int = 16
    sync_bn: bool = False
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        choice("engine.precision", self.precision, PRECISIONS)
        for key in ("log_every", "val_batch"):
            if getattr(self, key) < 1:
                raise ValueError(f"engine.{key} must be >= 1, got {getattr(self, key)!r}")
        for key in ("val_every", "save_every", "save_every_minutes", "num_workers", "threads"):
            if getattr(self, key) < 0:
                raise ValueError(f"engine.{key} must be >= 0, got {getattr(self, key)!r}")
