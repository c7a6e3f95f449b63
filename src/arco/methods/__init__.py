"""Training methods plugged into the one engine (the contract: :class:`arco.methods.base.Method`; docs/design.md).
A method is one file in this folder.

Every module here whose name does not start with ``_`` (other than ``base`` and ``registry``) is imported on
first import of :mod:`arco.methods`, which registers its methods: adding a built-in method is adding its file.
Methods outside arco come in through plug-ins (:func:`arco.methods.registry.load_plugins`).
"""

from __future__ import annotations

import importlib
import pkgutil

from arco.methods.base import Batch, Method, MethodBase, ModelConfig, StepOutput, build_backbone
from arco.methods.registry import (
    Recipe,
    RecipeStage,
    create,
    get_method,
    get_recipe,
    list_methods,
    load_plugins,
    register_method,
    register_recipe,
)

__all__ = [
    "Batch",
    "Method",
    "MethodBase",
    "ModelConfig",
    "StepOutput",
    "build_backbone",
    "Recipe",
    "RecipeStage",
    "create",
    "get_method",
    "get_recipe",
    "list_methods",
    "load_plugins",
    "register_method",
    "register_recipe",
    "build_method",
]

_NOT_METHODS = {"base", "registry"}

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_") and _info.name not in _NOT_METHODS:
        importlib.import_module(f"{__name__}.{_info.name}")


def build_method(name: str, cfg: object, num_classes: int, spatial_dims: int, model: ModelConfig) -> MethodBase:
    """Instantiate registered method ``name`` with its config dataclass ``cfg``."""
    cls = get_method(name)
    if not isinstance(cfg, cls.config_class):
        raise TypeError(f"method {name!r} takes a {cls.config_class.__name__}, got {type(cfg).__name__}")
    return cls(cfg, num_classes=num_classes, spatial_dims=spatial_dims, model=model)
