"""Per-dimension defaults: several official codes use other hyperparameters in 3D (LA, UA-MT's VNet setting) than in
2D (ACDC). A config field left ``None`` takes the value the official code uses for the data's dimension."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["with_dim_defaults"]


def with_dim_defaults(cfg: Any, spatial_dims: int, table: Mapping[int, Mapping[str, Any]]) -> Any:
    """``cfg`` (a frozen dataclass) with every ``None`` field named in ``table[spatial_dims]`` replaced by the
    value there; fields the user set are kept."""
    defaults = table[spatial_dims]
    fill = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **fill) if fill else cfg
