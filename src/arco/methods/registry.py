"""The method registry: one namespace of what ``arco train --method NAME`` trains, in the style of timm's
``list_models`` / ``create_model``.

Every entry is a :class:`Recipe`: a name, its stages, a description and a paper. There are two ways in:

- ``@register_method`` on a method class (:class:`arco.methods.base.Method`) registers it under ``cls.name``: a
  method *is* the recipe of one stage of the same name, by construction, whose ``cls`` is the class;
- :func:`register_recipe` names several stages (``arco`` = ``arco-pretrain`` then ``arco-finetune``) or fixes some
  parameters of a method (``arco-ns`` = ``arco`` with the NS sampler). Its stages are checked when it is
  registered: each names a registered method, and the parameters it fixes are valid for that method's config.

:func:`list_methods` lists the names (``fnmatch`` patterns) and :func:`create` builds a method (or one stage of a
recipe) with parameters overridden. Plug-ins come into the same namespace: :func:`load_plugins` imports modules or
``.py`` files named in a config's ``plugins:`` list (or ``--plugin``), and installed packages may declare an
``arco.methods`` entry-point group, loaded on first use. Nothing else in arco names a method: the engine, the log
columns, the curves, the CLI choices and ``arco train --list-methods`` read this registry.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import importlib
import importlib.util
import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arco._checks import ConfigError, did_you_mean
from arco.methods.base import CONTRACT, CONTRACT_ATTRIBUTES, RENAMED_MEMBERS, Method, ModelConfig

__all__ = [
    "RecipeStage",
    "Recipe",
    "register_method",
    "register_recipe",
    "list_methods",
    "create",
    "get_method",
    "get_recipe",
    "load_plugins",
    "ENTRY_POINT_GROUP",
]

logger = logging.getLogger(__name__)

#: Entry-point group through which installed packages add methods (``[project.entry-points."arco.methods"]``).
ENTRY_POINT_GROUP = "arco.methods"
KINDS = ("method", "recipe")

_ENTRIES: dict[str, Recipe] = {}
_entry_points_loaded = False
_REQUIRED = ("name", "config_class", "description", "paper", "loss_names", "segmenter")
_STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class RecipeStage:
    """One stage of a recipe: its folder name, the registered method that trains it, its share of the run's
    ``budget`` (used only when a config sets one and gives the stage no length of its own) and the method
    parameters the recipe fixes."""

    name: str
    method: str
    share: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A registry entry: what ``arco train --method NAME`` trains, one or more stages, each initialised from the
    one before. ``cls`` is the method class when the entry is a method (one stage of its own name)."""

    name: str
    stages: tuple[RecipeStage, ...]
    description: str
    paper: str
    cls: type | None = None

    @property
    def kind(self) -> str:
        """``method`` (a registered class) or ``recipe`` (stages of registered methods)."""
        return "method" if self.cls is not None else "recipe"


def _check_method_class(cls: type) -> None:
    old = sorted(
        n for klass in cls.__mro__ if not klass.__module__.startswith(("torch", "builtins"))
        for n in vars(klass) if n in RENAMED_MEMBERS
    )  # fmt: skip
    if old:
        renames = ", ".join(f"{n} -> {RENAMED_MEMBERS[n]}" for n in old)
        raise TypeError(f"register_method: {cls.__name__} uses names of the old method API; rename {renames}")
    missing = [a for a in _REQUIRED if not getattr(cls, a, None)]
    missing += [a for a in CONTRACT_ATTRIBUTES if a not in missing and not hasattr(cls, a)]
    missing += [m for m in CONTRACT if not callable(getattr(cls, m, None))]
    if missing:
        raise TypeError(
            f"register_method: {cls.__name__} must define {', '.join(missing)} (the method contract: "
            "arco.methods.base.Method)"
        )
    if not dataclasses.is_dataclass(cls.config_class):
        raise TypeError(f"register_method: {cls.__name__}.config_class must be a dataclass")
    names = (*cls.loss_names, *getattr(cls, "metric_names", ()))
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise TypeError(f"register_method: {cls.__name__}: loss/metric names must be distinct identifiers")


def _add(entry: Recipe, where: str) -> None:
    if entry.name in _ENTRIES:
        prior = _ENTRIES[entry.name]
        what = f"method {prior.cls.__module__}.{prior.cls.__name__}" if prior.cls else "a recipe"
        raise KeyError(f"{where}: {entry.name!r} is registered already (as {what}); choose another name")
    _ENTRIES[entry.name] = entry


def register_method(cls: type) -> type:
    """Class decorator: register method ``cls`` under ``cls.name`` (lowercase), which makes it the recipe of one
    stage of that name. The class declares everything the registry reads::

        @register_method
        class MyMethod(MethodBase):
            name = "my-method"
            config_class = MyConfig
            description = "one line for --list-methods"
            paper = "Author et al., Title, Venue Year"
            loss_names = ("loss_sup", "loss_mine")

    Raises:
        TypeError: a required attribute or contract member is missing, ``config_class`` is not a dataclass, or
            the class still uses a name of the old method API.
        KeyError: the name is taken (by a method or a recipe).
    """
    _check_method_class(cls)
    key = cls.name.lower()
    _add(Recipe(key, (RecipeStage(key, key),), cls.description, cls.paper, cls), "register_method")
    return cls


def _check_stage(recipe: str, stage: RecipeStage) -> None:
    where = f"register_recipe({recipe!r}): stage {stage.name!r}"
    if not _STAGE_NAME.fullmatch(stage.name):
        raise ValueError(f"{where}: a stage name is a folder name of letters, digits, '-' and '_'")
    entry = _ENTRIES.get(stage.method.lower())
    if entry is None or entry.cls is None:
        methods = list_methods(kind="method")
        raise KeyError(
            f"{where}: {stage.method!r} is not a registered method{did_you_mean(stage.method, methods)}; register "
            f"(import) the method before the recipe. Methods: {', '.join(methods)}"
        )
    fields = [f.name for f in dataclasses.fields(entry.cls.config_class)]
    unknown = [k for k in stage.params if k not in fields]
    if unknown:
        raise KeyError(f"{where}: method {entry.name!r} has no parameter {unknown[0]!r}; its parameters: {fields}")
    try:
        entry.cls.config_class(**stage.params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
    if not 0 < stage.share <= 1:
        raise ValueError(f"{where}: share must be in (0, 1], got {stage.share}")


def register_recipe(
    name: str, stages: Sequence[RecipeStage | tuple], description: str, paper: str, *, replace: bool = False
) -> Recipe:
    """Register a recipe of registered methods under ``name``: several stages, or a method with parameters fixed.

    Raises:
        KeyError: the name is taken, or a stage names no registered method or a parameter it does not have.
        ValueError: no stages, repeated or malformed stage names, or parameter values the method rejects.
    """
    key = name.lower()
    built = tuple(s if isinstance(s, RecipeStage) else RecipeStage(*s) for s in stages)
    if not built:
        raise ValueError(f"register_recipe({key!r}): a recipe needs at least one stage")
    if len({s.name for s in built}) != len(built):
        raise ValueError(f"register_recipe({key!r}): stage names must be distinct, got {[s.name for s in built]}")
    for stage in built:
        _check_stage(key, stage)
    recipe = Recipe(key, built, description, paper)
    if replace and key in _ENTRIES and _ENTRIES[key].cls is None:
        del _ENTRIES[key]
    _add(recipe, "register_recipe")
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


def list_methods(pattern: str | Sequence[str] = "*", kind: str | None = None) -> list[str]:
    """Sorted names of the registry's entries matching ``pattern`` (``fnmatch``; a list matches any of them),
    all of them or one ``kind``: ``method`` (registered classes) or ``recipe`` (stages of methods).

    Example:
        >>> [n for n in list_methods("arco*") if n in ("arco", "arco-ns", "arco-finetune")]
        ['arco', 'arco-finetune', 'arco-ns']
    """
    _ensure_entry_points()
    if kind is not None and kind not in KINDS:
        raise ValueError(f"list_methods(): kind must be one of {', '.join(KINDS)} or None, got {kind!r}")
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(
        n for n, e in _ENTRIES.items()
        if (kind is None or e.kind == kind) and any(fnmatch.fnmatchcase(n, p.lower()) for p in patterns)
    )  # fmt: skip


def get_recipe(name: str) -> Recipe:
    """The entry ``name`` (what ``arco train --method NAME`` runs); an unknown name lists the known ones and the
    closest."""
    _ensure_entry_points()
    key = str(name).lower()
    if key not in _ENTRIES:
        raise ConfigError(
            f"unknown method {name!r}{did_you_mean(key, _ENTRIES)}; known: {', '.join(sorted(_ENTRIES))} "
            "(`arco train --list-methods` describes them). A method of your own: list its module or .py file under "
            "`plugins:` in the config (or --plugin)"
        )
    return _ENTRIES[key]


def get_method(name: str) -> type:
    """The class of registered method ``name`` (what a stage trains); a recipe's name says which methods its
    stages use."""
    entry = get_recipe(name)
    if entry.cls is None:
        stages = ", ".join(f"{s.name}: {s.method}" for s in entry.stages)
        raise ConfigError(
            f"{entry.name!r} is a recipe ({stages}), not a method: a stage trains one method; give one of "
            f"{', '.join(dict.fromkeys(s.method for s in entry.stages))}"
        )
    return entry.cls


def create(
    name: str,
    *,
    num_classes: int,
    spatial_dims: int,
    model: ModelConfig | None = None,
    stage: str | None = None,
    **overrides: Any,
) -> Method:
    """Build registered method ``name`` (or stage ``stage`` of a recipe) with its default parameters, the ones
    the recipe fixes and ``overrides``, like timm's ``create_model``.

    Example:
        >>> m = create("arco-ns", stage="finetune", num_classes=4, spatial_dims=2, model=ModelConfig(dim=8),
        ...            num_queries=32)
        >>> (m.name, m.cfg.sampler, m.cfg.num_queries)
        ('arco-finetune', 'ns', 32)

    Raises:
        ConfigError: an unknown name, stage or parameter.
    """
    entry = get_recipe(name)
    if stage is None and len(entry.stages) > 1:
        raise ConfigError(
            f"{entry.name!r} has stages {', '.join(s.name for s in entry.stages)}; create one of them with stage=..."
        )
    chosen = entry.stages[0] if stage is None else next((s for s in entry.stages if s.name == stage), None)
    if chosen is None:
        raise ConfigError(
            f"{entry.name!r} has no stage {stage!r}; its stages: {', '.join(s.name for s in entry.stages)}"
        )
    cls = get_method(chosen.method)
    fields = [f.name for f in dataclasses.fields(cls.config_class)]
    for key in overrides:
        if key not in fields:
            raise ConfigError(
                f"method {cls.name!r} has no parameter {key!r}{did_you_mean(key, fields)}; its parameters: {fields}"
            )
    cfg = cls.config_class(**{**chosen.params, **overrides})
    return cls(cfg, num_classes=num_classes, spatial_dims=spatial_dims, model=model or ModelConfig())


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
    the working directory) or an importable module name. Importing registers its methods and recipes."""
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
