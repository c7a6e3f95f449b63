"""Keys that older config files (and the ``config.yaml`` of older runs) hold and this arco reads differently: each
is read as it is meant now or refused with what to rename, never silently ignored."""

from __future__ import annotations

import copy
from typing import Any

from arco._checks import ConfigError

__all__ = ["upgrade_sections", "upgrade_params"]

#: ``engine`` keys that were test hooks: their no-op value is dropped, any other is refused.
_TEST_HOOKS = {"nan_at": -1}
#: Method parameters renamed because their name clashed with a stage key: ``{method: {old: new}}``.
RENAMED_PARAMS = {"cps": {"init": "weight_init"}}


def upgrade_sections(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (top-level sections, overrides applied) with keys of older versions upgraded.

    Raises:
        ConfigError: a key that is gone and set to something that mattered, naming what to do instead.
    """
    out = copy.deepcopy(raw)
    engine = out.get("engine")
    if isinstance(engine, dict):
        for key, noop in _TEST_HOOKS.items():
            if key in engine:
                value = engine.pop(key)
                if value != noop:
                    raise ConfigError(
                        f"engine.{key}={value} was a test hook and is no longer a config key: remove it (tests inject "
                        "faults with arco.engine.faults.Faults)"
                    )
    return out


def upgrade_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A stage's ``params`` with the renamed parameters of :data:`RENAMED_PARAMS` under their new names."""
    renamed = RENAMED_PARAMS.get(str(method).lower(), {})
    return {renamed.get(k, k): v for k, v in params.items()}
