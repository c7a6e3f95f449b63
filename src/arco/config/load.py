"""Reading a run configuration: YAML presets (with ``extends``), ``--set`` overrides, ``--method`` and
``--iterations`` -> a validated :class:`~arco.config.schema.RunConfig`.

A stage is written with its schedule and its method's parameters apart (``schedule:`` and ``params:``, as the
presets and ``--print-config`` show them). The flat form of older files and the ``--set`` shorthand work too:
``finetune.sampler=ns`` sets a parameter of the method of stage ``finetune``, ``finetune.iterations=100`` its
schedule (a method may not name a parameter like a schedule key, so the two never overlap); the nested forms
``finetune.params.sampler`` / ``finetune.schedule.iterations`` are the same. Every value is checked when the config
is read, and an unknown key names the nearest valid one.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

from arco._checks import ConfigError, did_you_mean
from arco.config.convert import from_dict
from arco.config.legacy import upgrade_params, upgrade_sections
from arco.config.schema import SECTIONS, STAGE_KEYS, RunConfig, StageConfig
from arco.engine.config import ScheduleConfig

__all__ = ["PRESET_DIR", "presets", "read_yaml", "apply_overrides", "load_config", "build_config"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"
_SCHEDULE_KEYS = tuple(f.name for f in dataclasses.fields(ScheduleConfig))


def presets() -> list[str]:
    """Names of the built-in presets (``src/arco/configs/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _merge_stages(base: list[Any], over: list[Any]) -> list[Any]:
    """``extends``: stages of the child with a parent stage's name update that stage; new names are appended."""
    out = [copy.deepcopy(s) for s in base]
    for stage in over:
        name = stage.get("name") if isinstance(stage, dict) else None
        i = next((j for j, s in enumerate(out) if isinstance(s, dict) and s.get("name") == name), None)
        if i is None:
            out.append(stage)
        else:
            out[i] = _merge(out[i], stage)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if k == "stages" and isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = _merge_stages(out[k], v)
        else:
            out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(name_or_path: str | os.PathLike, seen: tuple[str, ...] = ()) -> tuple[dict[str, Any], Path]:
    """A preset name or YAML path -> (raw mapping with ``extends`` resolved, the folder it came from)."""
    import yaml

    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        if text not in presets():
            raise ConfigError(
                f"config {text!r} is neither a file nor a preset{did_you_mean(text, presets())}; "
                f"presets: {', '.join(presets())}"
            )
        path = PRESET_DIR / f"{text}.yaml"
    from arco._io import read_text

    content = read_text(path, "config file", ConfigError, "give a YAML config or a preset name (--list-presets)")
    try:
        raw = yaml.safe_load(content) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("extends", None)
    if base is not None:
        if str(base) in seen:
            raise ConfigError(f"config {path}: 'extends' forms a cycle through {base!r}")
        local = path.parent / str(base)
        ref = local if local.is_file() else Path(str(base))
        parent, _ = read_yaml(str(ref) if ref.is_file() else str(base), (*seen, str(base)))
        raw = _merge(parent, raw)
    return raw, path.parent


def _parse(item: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. finetune.sampler=sag), got {item!r}")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: cannot parse value {text!r}: {exc}") from exc
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set {key!r}: empty key component")
    return parts, value


def _set(node: dict[str, Any], parts: list[str], value: Any, key: str) -> None:
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p!r} is not a section")
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to the top-level sections (values parsed as YAML). Stage keys are
    applied by :func:`build_config`."""
    out = copy.deepcopy(raw)
    for item in overrides:
        parts, value = _parse(item)
        if parts[0] not in SECTIONS:
            raise ConfigError(f"--set {item!r}: {parts[0]!r} is not a section ({', '.join(SECTIONS)})")
        _set(out, parts, value, item)
    return out


# ------------------------------------------------------------------------------------------------ stages
def _normalise_stage(raw: Any, index: int) -> dict[str, Any]:
    """A stage mapping (flat or nested) -> ``{name, method, [init, init_checkpoint], schedule: {}, params: {}}``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"stages[{index}] must be a mapping with at least 'name' and 'method', got {raw!r}")
    out: dict[str, Any] = {"schedule": {}, "params": {}}
    for key, value in raw.items():
        if key in ("schedule", "params"):
            if not isinstance(value, dict):
                raise ConfigError(f"stages[{index}].{key} must be a mapping, got {value!r}")
            out[key].update(value)
        elif key in STAGE_KEYS:
            out[key] = value
        elif key in _SCHEDULE_KEYS:
            out["schedule"][key] = value
        else:
            out["params"][key] = value
    for key in ("name", "method"):
        if not isinstance(out.get(key), str) or not out[key]:
            raise ConfigError(f"stages[{index}] needs a '{key}' (a non-empty string), got {raw!r}")
    if out["name"] in SECTIONS or "/" in out["name"] or out["name"].startswith("."):
        raise ConfigError(f"stage name {out['name']!r} is not allowed (section names, '/' and leading '.')")
    return out


def _from_recipe(
    recipe_name: str, current: list[dict[str, Any]], budget: int | None
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The stages of recipe ``recipe_name``; a stage already in the config with the same name and method keeps its
    settings (the preset's tuning of that stage), the recipe's fixed parameters applied on top. A stage the config
    does not list trains ``share * budget`` iterations when a budget is set, else ``schedule.iterations``. Also
    returns ``{stage: share}`` of those unlisted stages."""
    from arco.methods import get_recipe

    recipe = get_recipe(recipe_name)
    stages, unlisted = [], {}
    for rs in recipe.stages:
        match = next((s for s in current if s["name"] == rs.name and s["method"] == rs.method), None)
        stage = copy.deepcopy(match) if match else {"name": rs.name, "method": rs.method, "schedule": {}, "params": {}}
        if match is None:
            unlisted[rs.name] = rs.share
            if budget is not None:
                stage["schedule"]["iterations"] = max(1, round(rs.share * budget))
        stage["params"].update(copy.deepcopy(dict(rs.params)))
        stages.append(stage)
    return stages, unlisted


def _check_lengths(method: str, stages: list[dict[str, Any]], unlisted: dict[str, float], budget: int | None) -> None:
    """Warn when stages of a recipe with shares train ``schedule.iterations`` each because neither a ``budget`` nor
    their own ``iterations`` (``--set``, ``--iterations``) gave them a length: arco 0.1 split it between them."""
    left = [s["name"] for s in stages if s["name"] in unlisted and "iterations" not in s["schedule"]]
    if budget is None and left and any(share != 1.0 for share in unlisted.values()):
        warnings.warn(
            f"--method {method}: stages {', '.join(left)} train schedule.iterations each (iterations is one stage's "
            "length). To share one run length between them by the recipe's shares "
            f"({', '.join(f'{unlisted[n]:.2g}' for n in left)}), as arco 0.1 split schedule.iterations, set "
            "budget=N; to silence this, give each stage's iterations",
            stacklevel=4,
        )


def _apply_stage_override(stages: list[dict[str, Any]], parts: list[str], value: Any, item: str) -> None:
    stage = next((s for s in stages if s["name"] == parts[0]), None)
    if stage is None:
        names = [s["name"] for s in stages]
        raise ConfigError(
            f"--set {item!r}: {parts[0]!r} is neither a section ({', '.join(SECTIONS)}) nor a stage of this run"
            f"{did_you_mean(parts[0], [*SECTIONS, *names])}; stages: {', '.join(names)}"
        )
    rest = parts[1:]
    if not rest:
        raise ConfigError(f"--set {item!r}: name a key of stage {parts[0]!r} (e.g. {parts[0]}.iterations=100)")
    if rest[0] in ("schedule", "params"):
        _set(stage[rest[0]], rest[1:] or [""], value, item)
    elif rest[0] in STAGE_KEYS and len(rest) == 1:
        stage[rest[0]] = value
    elif rest[0] in _SCHEDULE_KEYS and len(rest) == 1:
        stage["schedule"][rest[0]] = value
    else:
        _set(stage["params"], rest, value, item)


def _build_stage(raw: dict[str, Any], schedule: dict[str, Any]) -> StageConfig:
    from arco.methods import get_method

    name = raw["name"]
    cls = get_method(raw["method"])
    raw = {**raw, "params": upgrade_params(cls.name, raw["params"])}
    param_names = [f.name for f in dataclasses.fields(cls.config_class)]
    clash = sorted(set(param_names) & {*STAGE_KEYS, *_SCHEDULE_KEYS, "schedule", "params"})
    if clash:
        raise ConfigError(
            f"method {cls.name!r} names parameter(s) {clash} like a stage or schedule key, so `{name}.{clash[0]}` "
            "would be ambiguous; rename the parameter in the method's config class"
        )
    valid = [*STAGE_KEYS, *_SCHEDULE_KEYS, *param_names]
    for key in raw["params"]:
        if key not in valid:
            full = [f"{name}.{k}" for k in valid]
            raise ConfigError(
                f"unknown config key {name + '.' + key!r}{did_you_mean(f'{name}.{key}', full)}; stage {name!r} "
                f"(method {cls.name!r}) takes schedule keys {', '.join(_SCHEDULE_KEYS)} and parameters "
                f"{', '.join(f.name for f in dataclasses.fields(cls.config_class)) or '(none)'}"
            )
    sched = from_dict(ScheduleConfig, {**schedule, **raw["schedule"]}, prefix=f"{name}.")
    params = from_dict(cls.config_class, raw["params"], prefix=f"{name}.")
    extra = {k: raw[k] for k in ("init", "init_checkpoint") if k in raw}
    for k, v in extra.items():
        if not isinstance(v, str):
            raise ConfigError(f"config key '{name}.{k}' must be a string, got {v!r}")
    try:
        return StageConfig(name=name, method=cls.name, schedule=sched, params=params, **extra)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _check_device_name(name: str) -> None:
    """``engine.device`` is a device name (whether CUDA is there is checked where the run starts: a config may be
    written on one machine and trained on another)."""
    import torch

    try:
        ok = name == "auto" or torch.device(name).type in ("cpu", "cuda")
    except (RuntimeError, TypeError):
        ok = False
    if not ok:
        raise ConfigError(f"engine.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")


def build_config(
    raw: dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    *,
    method: str | None = None,
    iterations: int | None = None,
    plugins: tuple[str, ...] = (),
    base_dir: str | os.PathLike | None = None,
) -> RunConfig:
    """Raw mapping (+ overrides, method, iterations) -> validated :class:`RunConfig`."""
    from arco.methods import load_plugins
    from arco.methods.base import check_model_config

    parsed = [(_parse(o), o) for o in overrides]
    raw = upgrade_sections(apply_overrides(raw, [o for (parts, _), o in parsed if parts[0] in SECTIONS]))
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown config section {unknown[0]!r}{did_you_mean(unknown[0], SECTIONS)}; sections: "
            f"{', '.join(SECTIONS)} (stage settings go under `stages:`)"
        )
    all_plugins = tuple(str(p) for p in (raw.get("plugins") or ())) + tuple(plugins)
    load_plugins(all_plugins, base=base_dir)
    method = method or (raw.get("method") if any(p[0] == "method" for (p, _), _o in parsed) else None)
    stages = [_normalise_stage(s, i) for i, s in enumerate(raw.get("stages") or [])]
    schedule = dict(raw.get("schedule") or {})
    sections = {k: raw[k] for k in ("data", "model", "optim", "schedule", "budget", "engine", "eval") if k in raw}
    cfg = from_dict(RunConfig, sections)
    unlisted: dict[str, float] = {}
    if method is not None or not stages:
        method = method or str(raw.get("method") or "arco")
        stages, unlisted = _from_recipe(method, stages, cfg.budget)
    for (parts, value), item in parsed:
        if parts[0] not in SECTIONS:
            _apply_stage_override(stages, parts, value, item)
    if iterations is not None:
        if int(iterations) < 1:
            raise ConfigError(f"--iterations must be >= 1, got {iterations}")
        for s in stages:
            s["schedule"]["iterations"] = int(iterations)
    _check_lengths(str(method), stages, unlisted, cfg.budget)
    names = [s["name"] for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"stage names must be distinct, got {names}")
    check_model_config(cfg.model)
    _check_device_name(cfg.engine.device)
    built = tuple(_build_stage(s, schedule) for s in stages)
    return dataclasses.replace(
        cfg, method=str(method or raw.get("method") or "custom"), stages=built, plugins=all_plugins
    )


def load_config(
    name_or_path: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    method: str | None = None,
    iterations: int | None = None,
    plugins: tuple[str, ...] = (),
) -> RunConfig:
    """Preset name or YAML path (None = defaults) + overrides -> validated :class:`RunConfig`.

    Args:
        name_or_path: a preset (``arco train --list-presets``) or a YAML file (a run's ``config.yaml`` works).
        overrides: ``KEY=VALUE`` strings: ``section.key`` or ``stage.key``.
        method: a recipe or method name: the run's stages become that recipe's (``--method``).
        iterations: every stage's length (``--iterations``).
        plugins: extra plug-in modules or files (``--plugin``).
    """
    if name_or_path is None:
        raw, base = {}, Path(".")
    else:
        raw, base = read_yaml(name_or_path)
    return build_config(raw, overrides, method=method, iterations=iterations, plugins=plugins, base_dir=base)
