"""The run configuration: what a run trains, on what, and how. Schema only (frozen dataclasses).

A run is a list of *stages*; each stage names a registered method, its ``schedule`` (iterations, batch sizes,
learning-rate schedule) and its ``params`` (the method's own config dataclass), kept apart::

    data      arco.data.DataConfig            dataset, labeled split, patch size, augmentation
    model     arco.methods.ModelConfig        backbone name, head widths
    optim     arco.engine.OptimConfig         SGD momentum / weight decay / clipping
    schedule  arco.engine.ScheduleConfig      the defaults every stage's schedule starts from
    budget    int | None                      a whole run's iterations, shared by recipe stages that set none
    engine    arco.engine.EngineConfig        device, precision, seed, logging, validation and checkpoint cadence
    eval      EvalConfig                      metric conventions
    method    the recipe the stages came from (``arco``, ``supervised``, ...), for the record
    stages    tuple of StageConfig            what is trained, in order
    plugins   modules or .py files imported before the stages are read (methods of your own)

``iterations`` is always the length of one stage, in ``schedule`` and in a stage's ``schedule`` alike; ``budget``
is the only key that speaks of a whole run (docs/training.md, "Configuration").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arco._checks import choice
from arco.data.config import DataConfig
from arco.engine.config import EngineConfig, OptimConfig, ScheduleConfig
from arco.methods.base import ModelConfig

__all__ = ["EvalConfig", "StageConfig", "RunConfig", "SECTIONS", "STAGE_KEYS", "INIT_CHECKPOINTS"]

#: Top-level keys of a config file; any other first component of a ``--set`` key names a stage.
SECTIONS = ("data", "model", "optim", "schedule", "budget", "engine", "eval", "method", "stages", "plugins")
#: Keys of a stage besides its schedule and params.
STAGE_KEYS = ("name", "method", "init", "init_checkpoint")
INIT_CHECKPOINTS = ("last", "best")


@dataclass(frozen=True)
class EvalConfig:
    """Metric conventions of validation and test evaluation.

    Attributes:
        compat: empty-mask policy, ``"default"`` (explicit, counted) or ``"reference"`` (the reference code's).
    """

    compat: str = "default"

    def __post_init__(self) -> None:
        choice("eval.compat", self.compat, ("default", "reference"))


@dataclass(frozen=True)
class StageConfig:
    """One stage of a run.

    Attributes:
        name: the stage's folder under the run (``pretrain``, ``finetune``, ``supervised``...).
        method: registered method name.
        schedule: this stage's schedule (the run's ``schedule`` with this stage's overrides).
        params: the method's config dataclass.
        init: where the stage's initial weights come from: ``previous`` (the stage before it, if any, loading the
            method's ``init_components``), ``none`` (fresh weights), another stage's name, or a checkpoint path.
        init_checkpoint: which checkpoint of an earlier stage: ``last`` (the reference code) or ``best`` (on val).
    """

    name: str
    method: str
    schedule: ScheduleConfig
    params: Any
    init: str = "previous"
    init_checkpoint: str = "last"

    def __post_init__(self) -> None:
        choice(f"{self.name}.init_checkpoint", self.init_checkpoint, INIT_CHECKPOINTS)


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; its plain form is stored in every checkpoint and ``config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    budget: int | None = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method: str = "arco"
    stages: tuple[StageConfig, ...] = ()
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"budget must be >= 1 (a run's iterations) or null, got {self.budget!r}")

    def stage(self, name: str) -> StageConfig:
        """The stage called ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r} in this run; stages: {', '.join(s.name for s in self.stages)}")
