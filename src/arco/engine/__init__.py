"""The one training engine: configs, the resumable data stream, run state, the log, the optimisers and the loop.

``fit(method, data, StageSpec(...), optim=..., engine=..., run_dir=..., config=...)`` trains one stage of any
registered method; :mod:`arco.pipeline` chains stages into a run.
"""

from __future__ import annotations

from arco._device import resolve_device
from arco.engine.config import EngineConfig, OptimConfig, ScheduleConfig, lr_factor
from arco.engine.logger import RunLogger, log_columns
from arco.engine.loop import StageSpec, fit, seed_everything
from arco.engine.stream import BatchStream

__all__ = [
    "BatchStream",
    "EngineConfig",
    "OptimConfig",
    "RunLogger",
    "ScheduleConfig",
    "StageSpec",
    "fit",
    "log_columns",
    "lr_factor",
    "resolve_device",
    "seed_everything",
]
