"""Run configuration: YAML presets + ``--set`` overrides -> :class:`RunConfig` (frozen dataclasses) -> runs.

Sections (each a dataclass defined next to its component)::

    data        arco.data.DataConfig                      dataset, labeled split, patch size, augmentation
    model       arco.methods.base.ModelConfig             backbone name, head width D
    pretrain    arco.methods.arco.ArcoPretrainConfig      stage 1 (SPEC §4)
    finetune    arco.methods.arco.ArcoFinetuneConfig      stage 2 (SPEC §5)
    supervised  arco.methods.supervised.SupervisedConfig  baseline
    optim       arco.engine.OptimConfig                   SGD + schedule
    engine      arco.engine.EngineConfig                  device, precision, seed, logging cadence
    eval        EvalConfig                                metric conventions
    stages      list of stages run by ``arco train`` (default ``[pretrain, finetune]``)

An unknown key or a wrongly typed value is a :class:`ConfigError` naming the key and the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arco._checks import ConfigError, did_you_mean
from arco.data.config import DataConfig
from arco.engine import EngineConfig, OptimConfig
from arco.methods import ArcoFinetuneConfig, ArcoPretrainConfig, ModelConfig, SupervisedConfig

__all__ = [
    "EvalConfig",
    "RunConfig",
    "STAGES",
    "STAGE_METHOD",
    "PRESET_DIR",
    "presets",
    "load_config",
    "apply_overrides",
    "from_dict",
    "to_dict",
    "train",
]

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).parent / "configs"

#: Stage name -> registered method.
STAGE_METHOD = {"pretrain": "arco-pretrain", "finetune": "arco-finetune", "supervised": "supervised"}
STAGES = tuple(STAGE_METHOD)


@dataclass(frozen=True)
class EvalConfig:
    """Metric conventions of validation and test evaluation.

    Attributes:
        compat: empty-mask policy, ``"default"`` (explicit, counted) or ``"reference"`` (the reference
            code's).
    """

    compat: str = "default"


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; ``to_dict(cfg)`` is stored in every checkpoint and ``config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: ArcoPretrainConfig = field(default_factory=ArcoPretrainConfig)
    finetune: ArcoFinetuneConfig = field(default_factory=ArcoFinetuneConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    stages: tuple[str, ...] = ("pretrain", "finetune")


# ------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {key!r}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config key {key!r} must be a list of {len(args)} values, got {list(value)!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be a string, got {type(value).__name__} {value!r}")
        return str(value)
    return value


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``values``; unknown keys and wrong types raise :class:`ConfigError`."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix.rstrip('.') or '(top level)'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            full = [f"{prefix}{n}" for n in names]
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}{did_you_mean(prefix + str(key), full)}; "
                f"valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}"
            )
        kwargs[key] = _convert(value, hints[key], prefix + key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain YAML-safe dict of a (nested) config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


# ------------------------------------------------------------------------------------------------------------
# YAML presets and overrides


def presets() -> list[str]:
    """Names of the built-in presets (``src/arco/configs/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(name_or_path: str | os.PathLike, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    import yaml

    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        if text in presets():
            path = PRESET_DIR / f"{text}.yaml"
        else:
            raise ConfigError(
                f"config {text!r} is neither a file nor a preset{did_you_mean(text, presets())}; "
                f"presets: {', '.join(presets())}"
            )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    base = raw.pop("extends", None)
    if base is not None:
        if str(base) in seen:
            raise ConfigError(f"config {path}: 'extends' forms a cycle through {base!r}")
        ref = Path(base) if Path(base).is_absolute() or not (path.parent / str(base)).is_file() else path.parent / base
        raw = _merge(_read_yaml(str(ref), (*seen, str(base))), raw)
    return raw


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML: ``4``, ``0.5``, ``true``, ``[96, 96]``,
    ``sag``).
    """
    import copy

    import yaml

    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. finetune.sampler=sag), got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {text!r}: {exc}") from exc
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def load_config(
    name_or_path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Preset name or YAML path (None = defaults) + overrides -> validated :class:`RunConfig`."""
    raw = _read_yaml(name_or_path) if name_or_path is not None else {}
    cfg = from_dict(RunConfig, apply_overrides(raw, overrides))
    bad = [s for s in cfg.stages if s not in STAGE_METHOD]
    if bad or not cfg.stages:
        raise ConfigError(
            f"config key 'stages' must list stages from {', '.join(STAGES)}, got {list(cfg.stages)}"
            f"{did_you_mean(bad[0], STAGES) if bad else ''}"
        )
    return cfg


# ------------------------------------------------------------------------------------------------------------
# Running the stages


def _schedule(cfg: RunConfig, stage: str) -> tuple[int, int, int]:
    if stage == "supervised":
        return cfg.supervised.iterations, cfg.supervised.batch, 0
    m = cfg.pretrain if stage == "pretrain" else cfg.finetune
    return m.iterations, m.batch_labeled, m.batch_unlabeled


def train(
    cfg: RunConfig,
    out: str | os.PathLike,
    stages: tuple[str, ...] | list[str] | None = None,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    data: Any = None,
) -> dict[str, Any]:
    """Run the configured stages, each in ``out/<stage>``; stage 2 starts from stage 1's ``last.pt``.

    Args:
        cfg: the run configuration.
        out: run folder.
        stages: overrides ``cfg.stages``.
        resume: continue every stage from its ``last.pt`` (finished stages are skipped).
        init_from: checkpoint that initialises ``finetune`` when this run has no ``pretrain`` stage.
        data: an already built :class:`arco.data.SegmentationData` (default: ``build_data(cfg.data)``).

    Returns:
        ``{stage: summary}``.
    """
    import json

    from arco.engine import fit, seed_everything
    from arco.methods import METHODS

    stages = tuple(stages or cfg.stages)
    for s in stages:
        if s not in STAGE_METHOD:
            raise ConfigError(f"unknown stage {s!r}{did_you_mean(s, STAGES)}; stages: {', '.join(STAGES)}")
    if data is None:
        from arco.data import build_data

        data = build_data(cfg.data)
    out = Path(out)
    resolved = to_dict(cfg)
    results: dict[str, Any] = {}
    for stage in stages:
        stage_dir = out / stage
        summary_path = stage_dir / "summary.json"
        if resume and summary_path.is_file():
            prior = json.loads(summary_path.read_text())
            if prior.get("finished"):
                logger.info("%s: already finished in %s; skipping", stage, stage_dir)
                results[stage] = prior
                continue
        seed_everything(cfg.engine.seed)
        method = METHODS.build(
            STAGE_METHOD[stage],
            cfg=getattr(cfg, stage),
            num_classes=data.num_classes,
            spatial_dims=data.spatial_dims,
            model=dataclasses.replace(cfg.model, in_channels=data.in_channels),
        )
        init = None
        if stage == "finetune":
            pre = out / "pretrain" / "checkpoints" / "last.pt"
            if init_from is not None:
                init = init_from
            elif pre.is_file():
                init = pre
            else:
                logger.warning("finetune: no stage-1 checkpoint at %s; starting from random weights", pre)
        iterations, bl, bu = _schedule(cfg, stage)
        results[stage] = fit(
            method,
            data,
            stage=stage,
            iterations=iterations,
            batch_labeled=bl,
            batch_unlabeled=bu,
            optim=cfg.optim,
            engine=cfg.engine,
            run_dir=stage_dir,
            config=resolved,
            resume=resume,
            init_from=init,
            eval_compat=cfg.eval.compat,
        )
    return results
