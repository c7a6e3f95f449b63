"""What a study is: a base configuration, seeds and a grid of arms, read from YAML and expanded into runs.

A study file (built-in: ``arco study --list``)::

    description: ARCO samplers (paper Table 3)      # one line, shown by --list
    base: demo                                      # preset or config YAML every run starts from
    set: [data.root={out}/data]                     # overrides of every run ({out} = the study folder)
    method: arco                                    # optional: every run trains this recipe (--method)
    seeds: [0, 1, 2]                                # engine.seed of the runs of every arm
    grid:                                           # axes; an arm = one value of every axis
      sampler:                                      # value name -> list of overrides ...
        ns: [finetune.sampler=ns]
        sg: [finetune.sampler=sg]
      method:                                       # ... or a mapping {method, set, drop_stages}
        supervised: {method: supervised}
        arco-ns: [method=arco-ns]                   # `method=NAME` in a list is the same thing
      data.labeled: [1, 3, 7]                       # a config key with a list: the value is the key's value
    compare_to: {sampler: ns}                       # reference arm of the paired differences (a list of such
                                                    # mappings: one set of differences per reference)
    select_by_val: [lambda]                         # optional: pick these axes' values by validation Dice
    tune: {seed: 0, where: {...}, grid: {...}}      # optional: a tuning phase (arco.study.budget)

Overrides under ``set`` (and ``--set``) and an arm's own overrides that name a stage apply to the runs that have that
stage (a ``dataset`` value may set ``finetune.*`` for the ARCO arms next to a supervised one); an override that fits
no run of the study is an error. An arm's ``drop_stages`` removes stages from its runs (a stage that started from a
dropped stage starts from fresh weights): ``drop_stages: [pretrain]`` is ARCO without stage 1.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arco._checks import ConfigError, did_you_mean
from arco.config import SECTIONS, RunConfig, build_config, read_yaml
from arco.study.budget import TuneSpec, parse_tune

__all__ = [
    "Arm",
    "StudySpec",
    "RunSpec",
    "DEFINITIONS",
    "builtin_studies",
    "load_study",
    "expand",
    "arm_runs",
    "check_methods",
    "shorten",
]

#: Folder of the built-in study definitions (``arco study --list``).
DEFINITIONS = Path(__file__).resolve().parent / "definitions"
_KEYS = ("description", "base", "set", "method", "seeds", "grid", "compare_to", "select_by_val", "tune")
_ARM_KEYS = ("method", "set", "drop_stages")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Arm:
    """One cell of the grid: its folder name, the value name of every axis and what it changes."""

    name: str
    values: dict[str, str]
    overrides: tuple[str, ...] = ()
    method: str | None = None
    drop_stages: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudySpec:
    """A parsed study file (see the module docstring)."""

    name: str
    description: str
    base: str
    seeds: tuple[int, ...]
    axes: dict[str, dict[str, Arm]]
    overrides: tuple[str, ...] = ()
    method: str | None = None
    compare_to: dict[str, str] = field(default_factory=dict)
    select_by_val: tuple[str, ...] = ()
    source: str = ""
    references: tuple[dict[str, str], ...] = ()
    tune: TuneSpec | None = None

    def arms(self) -> list[Arm]:
        """Every arm: the product of the axes in their order (one arm named ``base`` without axes)."""
        if not self.axes:
            return [Arm("base", {})]
        out = []
        for combo in itertools.product(*(list(values.values()) for values in self.axes.values())):
            methods = [c.method for c in combo if c.method]
            if len(set(methods)) > 1:
                raise ConfigError(f"study {self.name}: arm {[c.name for c in combo]} sets method twice: {methods}")
            out.append(
                Arm(
                    name="_".join(c.name for c in combo),
                    values={axis: next(iter(c.values.values())) for axis, c in zip(self.axes, combo)},
                    overrides=tuple(o for c in combo for o in c.overrides),
                    method=methods[0] if methods else None,
                    drop_stages=tuple(s for c in combo for s in c.drop_stages),
                )
            )
        return out

    def reference(self, arm: Arm, compare_to: dict[str, str] | None = None) -> str | None:
        """Name of ``arm``'s counterpart in ``compare_to`` (default: the first reference; None for the reference
        arms themselves)."""
        ref = self.compare_to if compare_to is None else compare_to
        if not ref or all(arm.values.get(a) == v for a, v in ref.items()):
            return None
        values = {**arm.values, **ref}
        return next(a.name for a in self.arms() if a.values == values)

    def references_of(self, arm: Arm) -> list[str]:
        """``arm``'s counterpart under every reference of ``compare_to`` (a list when the file gives several)."""
        out = [self.reference(arm, ref) for ref in self.references or (self.compare_to,)]
        return [r for r in out if r is not None]


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: an arm at one seed, with its resolved configuration and folder."""

    arm: Arm
    seed: int
    config: RunConfig
    folder: Path

    @property
    def key(self) -> str:
        return f"{self.arm.name}/seed{self.seed}"


def builtin_studies() -> dict[str, str]:
    """Built-in study name -> its one-line description."""
    import yaml

    out = {}
    for path in sorted(DEFINITIONS.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        out[path.stem] = str(raw.get("description", "")).strip()
    return out


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ConfigError(f"{where} must be a list of KEY=VALUE strings, got {type(value).__name__} {value!r}")
    return tuple(str(v) for v in value)


def _names(value: Any, where: str) -> tuple[str, ...]:
    """A list of grid-axis names (``select_by_val``)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of grid axis names, e.g. [lambda], got {value!r}")
    return tuple(value)


def _compare_to(value: Any, where: str) -> list[dict[str, str]]:
    """``compare_to``: a mapping axis -> value name (``{sampler: ns}``), or a list of such mappings."""
    if value is None:
        return []
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [m for v in value for m in _compare_to(v, where)]
    if not isinstance(value, dict) or not all(isinstance(v, (str, int, float)) for v in value.values()):
        hint = f" (write {{{value[0]}: {value[1]}}})" if isinstance(value, list) and len(value) == 2 else ""
        raise ConfigError(
            f"{where} must map a grid axis to its reference value, e.g. {{sampler: ns}}, got {type(value).__name__} "
            f"{value!r}{hint}"
        )
    return [{str(k): str(v) for k, v in value.items()}]


def _scalar(raw: dict, key: str, where: str, required: bool = False) -> str | None:
    """A string-valued key of the study file (``description``, ``base``, ``method``)."""
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string, got {type(value).__name__} {value!r}")
    return value


def _arm_part(axis: str, value: str, spec: Any, where: str) -> Arm:
    """One value of one axis -> an :class:`Arm` fragment."""
    part = f"{axis}{value}" if value[:1].isdigit() else value
    if not _NAME.match(part):
        raise ConfigError(f"{where}: value name {value!r} must be letters, digits and . _ + - (it names a folder)")
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(_ARM_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], _ARM_KEYS)}; an arm value is a list "
                f"of overrides or a mapping with {', '.join(_ARM_KEYS)}"
            )
        overrides = _strings(spec.get("set"), f"{where}.set")
        method = spec.get("method")
        drop = _strings(spec.get("drop_stages"), f"{where}.drop_stages")
    else:
        overrides, method, drop = _strings(spec, where), None, ()
    plain = []
    for o in overrides:
        key, _, val = o.partition("=")
        if key.strip() == "method":
            method = val.strip()
        else:
            plain.append(o)
    if method is not None and (not isinstance(method, str) or not method):
        raise ConfigError(f"{where}: method must be a method or recipe name, got {method!r}")
    return Arm(part, {axis: value}, tuple(plain), method, drop)


def _parse_axes(grid: Any, where: str) -> dict[str, dict[str, Arm]]:
    if grid is None:
        return {}
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: grid must map axis names to their values, got {grid!r}")
    axes: dict[str, dict[str, Arm]] = {}
    for axis, values in grid.items():
        axis = str(axis)
        if isinstance(values, list):  # `data.labeled: [1, 3, 7]`: the axis is a config key
            if "." not in axis:
                raise ConfigError(
                    f"{where}: grid.{axis}: a list of values needs a config key as axis name (e.g. data.labeled), "
                    "or give a mapping value name -> overrides"
                )
            values = {str(v): [f"{axis}={v}"] for v in values}
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{where}: grid.{axis} must be a non-empty mapping value name -> overrides")
        axes[axis] = {str(v): _arm_part(axis, str(v), s, f"{where}: grid.{axis}.{v}") for v, s in values.items()}
    return axes


def load_study(name_or_path: str, overrides: Sequence[str] = (), seeds: Sequence[int] | None = None) -> StudySpec:
    """Read a built-in study (``table3``) or a study YAML; ``overrides`` apply to every run, ``seeds`` replace the
    file's seeds.

    Raises:
        ConfigError: unknown study, unknown keys, malformed grid, ``compare_to`` naming no arm.
    """
    import yaml

    from arco._io import read_text

    path = Path(name_or_path)
    if not path.is_file():
        known = builtin_studies()
        if name_or_path not in known:
            raise ConfigError(
                f"study {name_or_path!r} is neither a YAML file nor a built-in study"
                f"{did_you_mean(name_or_path, known)}; built-in: {', '.join(known)} (arco study --list)"
            )
        path = DEFINITIONS / f"{name_or_path}.yaml"
    text = read_text(path, "study file", ConfigError, "give a study YAML file or a built-in study name (--list)")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse study file {path}: {exc}") from exc
    where = f"study {path.stem} ({path})"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(_KEYS)}")
    unknown = sorted(set(map(str, raw)) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], _KEYS)}; keys: {_KEYS}")
    if not raw.get("base"):
        raise ConfigError(f"{where} needs `base:` (a preset such as demo, or a config YAML)")
    base = str(_scalar(raw, "base", where, required=True))
    if (path.parent / base).is_file():
        base = str((path.parent / base).resolve())
    seed_list = list(seeds) if seeds is not None else raw.get("seeds", [0])
    if (
        not isinstance(seed_list, list)
        or not seed_list
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seed_list)
    ):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, e.g. [0, 1, 2], got {seed_list!r}")
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"{where}: seeds must be distinct, got {seed_list}")
    references = _compare_to(raw.get("compare_to"), f"{where}: compare_to")
    spec = StudySpec(
        name=path.stem,
        description=str(_scalar(raw, "description", where) or "").strip(),
        base=base,
        seeds=tuple(seed_list),
        axes=_parse_axes(raw.get("grid"), where),
        overrides=_strings(raw.get("set"), f"{where}: set") + tuple(overrides),
        method=_scalar(raw, "method", where),
        compare_to=references[0] if references else {},
        select_by_val=_names(raw.get("select_by_val"), f"{where}: select_by_val"),
        source=str(path),
        references=tuple(references),
        tune=parse_tune(raw.get("tune"), seed_list[0], where),
    )
    _check_axes(spec, where)
    return spec


def _check_value(spec: StudySpec, axis: str, value: str, what: str, where: str) -> None:
    if axis not in spec.axes:
        raise ConfigError(f"{where}: {what} axis {axis!r} is not a grid axis ({', '.join(spec.axes)})")
    if value not in spec.axes[axis]:
        raise ConfigError(
            f"{where}: {what} {axis}={value!r} is not a value of that axis"
            f"{did_you_mean(value, spec.axes[axis])}; values: {', '.join(spec.axes[axis])}"
        )


def _check_axes(spec: StudySpec, where: str) -> None:
    for ref in spec.references or (spec.compare_to,):
        for axis, value in ref.items():
            _check_value(spec, axis, value, "compare_to", where)
    for axis in spec.select_by_val:
        if axis not in spec.axes:
            raise ConfigError(f"{where}: select_by_val axis {axis!r} is not a grid axis ({', '.join(spec.axes)})")
    names = [a.name for a in spec.arms()]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two arms have the same folder name; rename values ({names})")
    if spec.tune is not None:
        spec.tune.check(spec.axes, spec.arms(), where)


def check_methods(spec: StudySpec) -> None:
    """Fail before anything runs when the study names methods that are not registered."""
    from arco.methods import list_methods, load_plugins

    raw, base_dir = read_yaml(spec.base)
    load_plugins([str(p) for p in raw.get("plugins") or ()], base=base_dir)
    wanted = {spec.method} if spec.method else set()
    for values in spec.axes.values():
        wanted |= {a.method for a in values.values() if a.method}
    for o in spec.overrides:
        if o.partition("=")[0].strip() == "method":
            wanted.add(o.partition("=")[2].strip())
    known = set(list_methods())
    missing = sorted(m for m in wanted if m.lower() not in known)
    if missing:
        raise ConfigError(
            f"study {spec.name} names method(s) that are not registered: {', '.join(missing)}. Known methods: "
            f"{', '.join(sorted(known))}. Add them (a file in arco/methods or a plug-in) or drop those arms"
        )


def shorten(cfg: RunConfig, factor: int) -> RunConfig:
    """Every stage's iterations and the validation/log cadence divided by ``factor`` (``--fast``)."""
    stages = tuple(
        dataclasses.replace(
            s, schedule=dataclasses.replace(s.schedule, iterations=max(1, s.schedule.iterations // factor))
        )
        for s in cfg.stages
    )
    eng = cfg.engine
    engine = dataclasses.replace(
        eng,
        val_every=max(1, eng.val_every // factor) if eng.val_every else 0,
        log_every=max(1, eng.log_every // factor),
    )
    return dataclasses.replace(cfg, stages=stages, engine=engine)


def _drop(cfg: RunConfig, names: tuple[str, ...], where: str) -> RunConfig:
    if not names:
        return cfg
    have = [s.name for s in cfg.stages]
    for n in names:
        if n not in have:
            raise ConfigError(f"{where}: drop_stages names {n!r}, not a stage of this run ({', '.join(have)})")
    kept = []
    for i, s in enumerate(cfg.stages):
        if s.name in names:
            continue
        source = have[i - 1] if s.init == "previous" and i > 0 else s.init
        if source in names:
            if s.init != "previous":
                raise ConfigError(f"{where}: stage {s.name!r} starts from dropped stage {source!r}")
            s = dataclasses.replace(s, init="none")
        kept.append(s)
    if not kept:
        raise ConfigError(f"{where}: drop_stages removes every stage")
    return dataclasses.replace(cfg, stages=tuple(kept))


def _fitting(overrides, raw, arm_sets, method, base_dir, out: Path, where: str) -> list[str]:
    """The study-level overrides for one arm: ``{out}`` replaced, and stage keys of stages this arm's runs do not
    have left out (``finetune.*`` does not apply to a supervised arm)."""
    sets = [o.replace("{out}", str(out)) for o in overrides]
    if all(o.split("=", 1)[0].split(".")[0].strip() in SECTIONS for o in sets):
        return sets
    sections = [o for o in sets if o.split("=", 1)[0].split(".")[0].strip() in SECTIONS]
    try:
        stages = {s.name for s in build_config(raw, [*sections, *arm_sets], method=method, base_dir=base_dir).stages}
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return [o for o in sets if o.split("=", 1)[0].split(".")[0].strip() in (*SECTIONS, *stages)]


def arm_runs(
    spec: StudySpec,
    arm: Arm,
    out: str | Path,
    seeds: Sequence[int],
    folder: Callable[[int], Path],
    extra: Sequence[str] = (),
    fast: bool = False,
    base: tuple[dict, Path] | None = None,
) -> list[RunSpec]:
    """The runs of one arm at ``seeds`` in ``folder(seed)``; ``extra`` overrides (a tuning setting or choice) apply
    after the study's ``set`` and before the arm's own, so an ablation's own value wins over a tuned one. ``base``:
    ``read_yaml(spec.base)`` when the caller has it already (it is not modified).

    Raises:
        ConfigError: an override or method does not fit the arm (names the arm).
    """
    out = Path(out).resolve()
    raw, base_dir = base or read_yaml(spec.base)
    method = arm.method or spec.method
    where = f"study {spec.name}, arm {arm.name}"
    arm_sets = _fitting(arm.overrides, raw, [], method, base_dir, out, where)
    tuned = _fitting(extra, raw, arm_sets, method, base_dir, out, where) if extra else []
    shared = [*_fitting(spec.overrides, raw, [*tuned, *arm_sets], method, base_dir, out, where), *tuned, *arm_sets]
    runs = []
    for seed in seeds:
        sets = [*shared, f"engine.seed={seed}", "engine.progress=false"]
        try:
            cfg = build_config(raw, sets, method=method, base_dir=base_dir)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        cfg = _drop(cfg, arm.drop_stages, where)
        if cfg.data.root:  # workers and Slurm jobs may start elsewhere
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=os.path.abspath(cfg.data.root)))
        plugins = tuple(str((base_dir / p).resolve()) if (base_dir / p).is_file() else p for p in cfg.plugins)
        cfg = dataclasses.replace(cfg, plugins=plugins)
        if fast:
            cfg = shorten(cfg, 10)
        runs.append(RunSpec(arm, seed, cfg, folder(seed)))
    return runs


def expand(
    spec: StudySpec,
    out: str | Path,
    fast: bool = False,
    tuned: Mapping[str, Sequence[str]] | None = None,
    skip: Collection[str] = (),
) -> list[RunSpec]:
    """Every (arm, seed) run with its resolved config (seed in ``engine.seed``; ``{out}`` in overrides replaced by
    the study folder; ``--fast`` schedules divided by 10) and its folder ``out/runs/<arm>/seed<k>``.

    Args:
        tuned: arm name -> the overrides of the setting its tuning budget chose (:mod:`arco.study.tune`).
        skip: arms left out (their tuning did not finish).

    Raises:
        ConfigError: an override or method does not fit an arm (names the arm).
    """
    out = Path(out).resolve()
    raw, base_dir = read_yaml(spec.base)
    runs = []
    used: dict[str, bool] = {}  # arm override -> fits at least one arm
    for arm in spec.arms():
        where = f"study {spec.name}, arm {arm.name}"
        arm_sets = _fitting(arm.overrides, raw, [], arm.method or spec.method, base_dir, out, where)
        for o in arm.overrides:
            used[o] = used.get(o, False) or o.replace("{out}", str(out)) in arm_sets
        if arm.name in skip:
            continue
        runs += arm_runs(spec, arm, out, spec.seeds, lambda seed, a=arm: out / "runs" / a.name / f"seed{seed}",
                         (tuned or {}).get(arm.name, ()), fast, (raw, base_dir))  # fmt: skip
    unused = [o for o, fits in used.items() if not fits]
    if unused:
        raise ConfigError(
            f"study {spec.name}: {', '.join(map(repr, unused))} names a stage that no run of the study has; check the "
            "stage name (arco train --config BASE --print-config lists a run's stages)"
        )
    return runs
