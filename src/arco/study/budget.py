"""The ``tune:`` section of a study file: the same small tuning budget for every method, read and checked.

::

    tune:
      seed: 0                          # the one seed the budget is evaluated at (default: the study's first seed)
      where: {labeled: "1"}            # the axis values it is evaluated at (axes not named: each value separately)
      grid:                            # a value of an axis (a method) or an arm name -> parameter -> values
        supervised: {schedule.lr: [0.01, 0.02, 0.03, 0.05]}
        mean-teacher: {schedule.lr: [0.01, 0.03], mean-teacher.consistency: [0.1, 1]}
        arco-sg: {"pretrain.lr,finetune.lr": [0.01, 0.02], finetune.lambda_contrast: [0.01, 0.1]}
      share: {full: [no-contrast, no-nn]}   # optional: values that take another value's choice (ablations)

Every grid entry is one *budget*: the product of its parameters' values, each product one *setting*. Every budget
must hold the same number of settings (a fair comparison gives every method the same number of tries). A key that
names several config keys separated by commas (``"pretrain.lr,finetune.lr"``) sets all of them to the value.
:mod:`arco.study.tune` turns the section into tuning runs and picks each budget's setting by validation Dice.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from arco._checks import ConfigError, did_you_mean

__all__ = ["Setting", "TuneSpec", "parse_tune"]

_KEYS = ("seed", "where", "grid", "share")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Setting:
    """One point of a budget: its folder name, the value of every parameter and the overrides it applies."""

    name: str
    values: dict[str, str]
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class TuneSpec:
    """A parsed ``tune:`` section (see the module docstring)."""

    seed: int
    where: dict[str, str]
    grid: dict[str, tuple[Setting, ...]]
    share: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Settings per budget (the same for every budget)."""
        return len(next(iter(self.grid.values())))

    def source(self, name: str, values: dict[str, str]) -> tuple[str, str | None] | None:
        """The budget whose choice the arm ``name`` (with axis values ``values``) takes: ``(grid key, axis)`` where
        ``axis`` is the axis whose value :attr:`share` replaces by the key (None when the arm is tuned itself), or
        None for an arm outside every budget.

        Raises:
            ConfigError: two budgets name the same arm.
        """
        hits = [k for k in self.grid if k == name or k in values.values()]
        if len(hits) > 1:
            raise ConfigError(f"arm {name} is named by two tuning budgets ({', '.join(hits)}); give it one")
        if hits:
            return hits[0], None
        for key, others in self.share.items():
            for axis, value in values.items():
                if value in others:
                    return key, axis
        return None

    def check(self, axes: dict[str, Any], arms: list[Any], where: str) -> None:
        """The axes, values and arms (objects with ``name`` and ``values``) the section names exist, and no arm is in
        two budgets.

        Raises:
            ConfigError: naming the key and the values it could be.
        """
        for axis, value in self.where.items():
            if axis not in axes:
                raise ConfigError(f"{where}: tune.where axis {axis!r} is not a grid axis ({', '.join(axes)})")
            if value not in axes[axis]:
                raise ConfigError(
                    f"{where}: tune.where {axis}={value!r} is not a value of that axis"
                    f"{did_you_mean(value, axes[axis])}; values: {', '.join(axes[axis])}"
                )
        values = {v: axis for axis, vals in axes.items() for v in vals}
        names = [a.name for a in arms]
        for key in self.grid:
            if key not in values and key not in names:
                raise ConfigError(f"{where}: tune.grid names {key!r}, neither a value of a grid axis nor an arm"
                                  f"{did_you_mean(key, [*values, *names])}")  # fmt: skip
        for key, others in self.share.items():
            for other in others:
                if values.get(other) is None or values.get(other) != values.get(key):
                    raise ConfigError(
                        f"{where}: tune.share.{key}: {other!r} must be a value of the same axis as {key!r} "
                        f"({values.get(key) or 'none'})"
                    )
        for arm in arms:
            try:
                self.source(arm.name, arm.values)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc

    def target(self, name: str, values: dict[str, str]) -> dict[str, str] | None:
        """The axis values of the arm whose tuning runs choose the setting of arm ``name`` (None: not tuned)."""
        src = self.source(name, values)
        if src is None:
            return None
        key, axis = src
        if key == name:  # a budget named by its arm: that arm is tuned as it is
            return dict(values)
        out = dict(values)
        if axis is not None:
            out[axis] = key
        out.update(self.where)
        return out


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def _settings(key: str, params: Any, where: str) -> tuple[Setting, ...]:
    if not isinstance(params, dict) or not params:
        raise ConfigError(
            f"{where}: tune.grid.{key} must map config keys to lists of values, e.g. {{schedule.lr: [0.01, 0.03]}}, "
            f"got {params!r}"
        )
    names: list[list[str]] = []
    values: list[list[str]] = []
    for param, vals in params.items():
        keys = [k.strip() for k in str(param).split(",")]
        if not all(k and "." in k and "=" not in k for k in keys):
            raise ConfigError(
                f"{where}: tune.grid.{key}: {param!r} must be a config key such as schedule.lr or finetune.lr "
                "(several, comma-separated, take the same value)"
            )
        if isinstance(vals, (str, int, float)):
            vals = [vals]
        if not isinstance(vals, list) or not vals or not all(isinstance(v, (str, int, float)) for v in vals):
            raise ConfigError(f"{where}: tune.grid.{key}.{param} must be a non-empty list of values, got {vals!r}")
        if len(set(map(_value, vals))) != len(vals):
            raise ConfigError(f"{where}: tune.grid.{key}.{param} lists a value twice: {vals}")
        names.append(keys)
        values.append([_value(v) for v in vals])
    shorts = [k[0].rsplit(".", 1)[-1] for k in names]
    if len(set(shorts)) != len(shorts):  # two parameters end alike (pretrain.lr, finetune.lr): name them in full
        shorts = [k[0] for k in names]
    out = []
    for combo in itertools.product(*values):
        overrides = tuple(f"{k}={v}" for keys, v in zip(names, combo) for k in keys)
        label = "_".join(_UNSAFE.sub("-", f"{s}{v}") for s, v in zip(shorts, combo))
        out.append(Setting(label, {",".join(k): v for k, v in zip(names, combo)}, overrides))
    return tuple(out)


def parse_tune(raw: Any, default_seed: int, where: str) -> TuneSpec | None:
    """The ``tune:`` mapping of a study file -> :class:`TuneSpec` (None when absent). The axes and arms it names are
    checked by :func:`arco.study.spec.load_study`, which knows the grid.

    Raises:
        ConfigError: unknown keys, a malformed grid, budgets of different sizes.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: tune must be a mapping with keys {', '.join(_KEYS)}, got {raw!r}")
    unknown = sorted(set(map(str, raw)) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{where}: tune has unknown key {unknown[0]!r}; keys: {', '.join(_KEYS)}")
    seed = raw.get("seed", default_seed)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"{where}: tune.seed must be an integer, got {seed!r}")
    at = raw.get("where") or {}
    if not isinstance(at, dict) or not all(isinstance(v, (str, int, float)) for v in at.values()):
        raise ConfigError(
            f"{where}: tune.where must map grid axes to one value each, e.g. {{labeled: '1'}}, got {at!r}"
        )
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{where}: tune.grid must map methods (axis values) or arm names to their budgets")
    budgets = {str(k): _settings(str(k), v, where) for k, v in grid.items()}
    sizes = {k: len(v) for k, v in budgets.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError(
            f"{where}: every method must get the same tuning budget, but the numbers of settings differ: "
            + ", ".join(f"{k} {n}" for k, n in sizes.items())
            + "; give each grid entry as many settings (e.g. supervised 4 learning rates, the others 2 x 2)"
        )
    share = raw.get("share") or {}
    if not isinstance(share, dict) or not all(isinstance(v, list) for v in share.values()):
        raise ConfigError(f"{where}: tune.share must map a tuned value to a list of values that take its choice")
    share = {str(k): tuple(str(x) for x in v) for k, v in share.items()}
    for k in share:
        if k not in budgets:
            raise ConfigError(
                f"{where}: tune.share names {k!r}, which has no budget in tune.grid ({', '.join(budgets)})"
            )
    return TuneSpec(int(seed), {str(a): _value(v) for a, v in at.items()}, budgets, share)
