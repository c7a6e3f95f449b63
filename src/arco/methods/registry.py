"""The method registry: methods register themselves; recipes chain them into stages; plug-ins add more.

- ``@register_method`` on a :class:`~arco.methods.base.MethodBase` subclass registers it under its ``name`` with
  its config class, loss names, initialised modules and predicting module. Every registered method is also a
  one-stage *recipe* of the same name.
- :func:`register_recipe` names a list of stages (``arco`` = ``arco-pretrain`` then ``arco-finetune``); a recipe
  stage may fix some of the method's parameters (``arco-ns`` = ``arco`` with the NS sampler).
- Plug-ins: :func:`load_plugins` imports modules or ``.py`` files named in a config's ``plugins:`` list (or
  ``--plugin``); installed packages may declare an ``arco.methods`` entry-point group, loaded on first use.

Nothing else in arco names a method: the engine, the log columns, the curves, the CLI choices and
``arco train --list-methods`` read this registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arco._checks import ConfigError, did_you_mean

__all__ = [
    "RecipeStage",
    "Recipe",
    "register_method",
    "register_recipe",
    "get_method",
    "get_recipe",
    "method_names",
    "recipe_names",
    "load_plugins",
    "ENTRY_POINT_GROUP",
]

logger = logging.getLogger(__name__)

#: Entry-point group through which installed packages add methods (``[project.entry-points."arco.methods"]``).
ENTRY_POINT_GROUP = "arco.methods"

_METHODS: dict[str, type] = {}
_RECIPES: dict[str, Recipe] = {}
_entry_points_loaded = False
_REQUIRED = ("name", "config_class", "description", "paper", "loss_names", "segmenter")


@dataclass(frozen=True)
class RecipeStage:
    """One stage of a recipe: its folder name, the registered method, its share of the run's iteration budget
    (used when a preset does not give the stage's length) and parameters the recipe fixes."""

    name: str
    method: str
    share: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """What ``arco train --method NAME`` trains: one or more stages, each initialised from the one before."""

    name: str
    stages: tuple[RecipeStage, ...]
    description: str
    paper: str


def register_method(cls: type) -> type:
    """Class decorator: register a method under ``cls.name`` (lowercase) and as a one-stage recipe.

    Raises:
        TypeError: a required attribute is missing or ``config_class`` is not a dataclass.
        KeyError: the name is taken.
    """
    missing = [a for a in _REQUIRED if not getattr(cls, a, None)]
    if missing:
        raise TypeError(f"register_method: {cls.__name__} must define {', '.join(missing)}")
    if not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"register_method: {cls.__name__}.config_class must be a dataclass")
    names = (*cls.loss_names, *getattr(cls, "metric_names", ()))
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise TypeError(f"register_method: {cls.__name__}: loss/metric names must be distinct identifiers")
    key = cls.name.lower()
    if key in _METHODS:
        raise KeyError(f"method {key!r} is registered twice ({_METHODS[key].__module__} and {cls.__module__})")
    _METHODS[key] = cls
    if key not in _RECIPES:
        _RECIPES[key] = Recipe(key, (RecipeStage(key, key),), cls.description, cls.paper)
    return cls


def register_recipe(
    name: str, stages: Sequence[RecipeStage | tuple], description: str, paper: str, *, replace: bool = False
) -> Recipe:
    """Register a multi-stage recipe (or a preset of a method's parameters) under ``name``."""
    key = name.lower()
    built = tuple(s if isinstance(s, RecipeStage) else RecipeStage(*s) for s in stages)
    if not built:
        raise ValueError(f"recipe {key!r} needs at least one stage")
    if key in _RECIPES and not replace and _RECIPES[key].stages != built:
        raise KeyError(f"recipe {key!r} is registered twice")
    recipe = Recipe(key, built, description, paper)
    _RECIPES[key] = recipe
    return recipe


def _ensure_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken third-party plug-in must not break arco; say which one
            logger.warning("arco: could not load method plug-in %r (%s): %s", ep.name, ep.value, exc)


def get_method(name: str) -> type:
    """The registered method class; an unknown name lists the known ones and the closest."""
    _ensure_entry_points()
    key = str(name).lower()
    if key not in _METHODS:
        raise ConfigError(
            f"unknown method {name!r}{did_you_mean(key, _METHODS)}; known methods: {', '.join(sorted(_METHODS))}. "
            "A method of your own: list its module or .py file under `plugins:` in the config (or --plugin)"
        )
    return _METHODS[key]


def get_recipe(name: str) -> Recipe:
    """The recipe ``arco train --method NAME`` runs."""
    _ensure_entry_points()
    key = str(name).lower()
    if key not in _RECIPES:
        raise ConfigError(
            f"unknown method {name!r}{did_you_mean(key, _RECIPES)}; known: {', '.join(sorted(_RECIPES))} "
            "(`arco train --list-methods` describes them)"
        )
    return _RECIPES[key]


def method_names() -> list[str]:
    _ensure_entry_points()
    return sorted(_METHODS)


def recipe_names() -> list[str]:
    _ensure_entry_points()
    return sorted(_RECIPES)


def _import_file(path: Path) -> None:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    mod_name = f"arco_plugin_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"plug-in {path} cannot be imported as a Python module; give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise ConfigError(f"plug-in {path} failed to import: {type(exc).__name__}: {exc}") from exc


def load_plugins(specs: Iterable[str], base: str | Path | None = None) -> None:
    """Import each plug-in: a ``.py`` file (relative paths are tried against ``base``, the config's folder, then
    the working directory) or an importable module name. Importing registers its methods."""
    for spec in specs:
        text = str(spec).strip()
        if not text:
            continue
        if text.endswith(".py") or "/" in text or "\\" in text:
            candidates = [Path(text)] if Path(text).is_absolute() else [Path(base or ".") / text, Path(text)]
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                raise ConfigError(
                    f"plug-in file {text!r} does not exist (looked in {', '.join(str(c) for c in candidates)}); "
                    "give the path of a .py file that registers a method, or an importable module name"
                )
            _import_file(path)
            continue
        try:
            importlib.import_module(text)
        except ImportError as exc:
            raise ConfigError(
                f"plug-in module {text!r} cannot be imported ({exc}); install it or give the path of its .py file"
            ) from exc
