"""Run configuration: the schema (:mod:`arco.config.schema`), dict conversion (:mod:`arco.config.convert`) and
reading presets, YAML files and overrides (:mod:`arco.config.load`). Running a configuration is
:mod:`arco.pipeline`'s job."""

from __future__ import annotations

from arco.config.convert import from_dict, to_dict
from arco.config.load import PRESET_DIR, apply_overrides, build_config, load_config, presets, read_yaml
from arco.config.schema import SECTIONS, EvalConfig, RunConfig, StageConfig

__all__ = [
    "PRESET_DIR",
    "SECTIONS",
    "EvalConfig",
    "RunConfig",
    "StageConfig",
    "apply_overrides",
    "build_config",
    "from_dict",
    "load_config",
    "presets",
    "read_yaml",
    "to_dict",
]
