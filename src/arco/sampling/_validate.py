"""Argument checks and strategy names shared by the paper's samplers and the reference reproductions.

The bottom of :mod:`arco.sampling`: it imports nothing else from the package, so :mod:`arco.sampling.paper`,
:mod:`arco.sampling.reference` and the public dispatch above them never import each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from arco._checks import choice

__all__ = [
    "STRATEGIES",
    "REF_STRATEGIES",
    "Grid",
    "check_grid",
    "check_mask",
    "check_num",
    "check_ref",
    "check_spatial",
    "check_strategy",
]

STRATEGIES = ("ns", "sg", "sag")
# Reproductions of the reference code's list-block sampler (arco.sampling.reference): sample()/estimate() only.
REF_STRATEGIES = ("sg-ref", "sag-ref")
Grid = int | Sequence[int]


def check_grid(grid: Grid, spatial_dims: int, where: str) -> tuple[int, ...]:
    """Cells per spatial axis as a tuple; TypeError/ValueError naming ``where`` for a bad ``grid``."""
    is_int = isinstance(grid, int) and not isinstance(grid, bool)
    cells = (grid,) * spatial_dims if is_int else tuple(grid) if isinstance(grid, Sequence) else ()
    if len(cells) != spatial_dims or not all(isinstance(k, int) and not isinstance(k, bool) for k in cells):
        raise TypeError(f"{where}: grid must be an int or a tuple of {spatial_dims} ints, got {grid!r}")
    if min(cells) < 1:
        raise ValueError(f"{where}: grid must be positive in every axis, got {grid!r}")
    return cells


def check_num(num: int, argname: str, where: str) -> int:
    """``num`` itself when it is a non-negative int (not a bool); ValueError otherwise."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ValueError(f"{where}: expected argument `{argname}` to be a non-negative integer, but got {num!r}")
    return num


def check_spatial(t: object, name: str, dtypes: tuple[torch.dtype, ...], kind: str, where: str) -> None:
    """``t`` must be a tensor of one of ``dtypes`` shaped (B, H, W) or (B, D, H, W)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes or t.dim() not in (3, 4):
        error = TypeError if t.dtype not in dtypes else ValueError
        dtype = str(t.dtype).replace("torch.", "")
        raise error(
            f"{where}: {name} must be a {kind} tensor (B, H, W) or (B, D, H, W); got {dtype} of shape {tuple(t.shape)}"
        )


def check_strategy(strategy: str, where: str) -> str:
    """One of :data:`STRATEGIES`; the reference strategies get their own message (``sample``/``estimate`` only)."""
    if strategy in REF_STRATEGIES:
        raise ValueError(
            f"{where}: strategy {strategy!r} (a reproduction of the reference code's list-block sampler) is "
            "only available in sample() and estimate(); use 'ns', 'sg' or 'sag' here"
        )
    # A transposed name ('sga') is the likeliest typo; difflib alone would suggest 'sg' for it.
    if isinstance(strategy, str) and strategy not in STRATEGIES:
        for option in STRATEGIES:
            if sorted(strategy) == sorted(option):
                known = ", ".join(repr(o) for o in STRATEGIES)
                raise ValueError(
                    f"{where}: strategy must be one of {known}, got {strategy!r} (did you mean {option!r}?)"
                )
    return choice("strategy", strategy, STRATEGIES, where)


def check_mask(mask: object, strategy: str, grid: Grid, where: str) -> tuple[int, ...]:
    """A bool mask, a paper strategy and a grid for its spatial dims: the cells per axis."""
    check_spatial(mask, "mask", (torch.bool,), "bool", where)
    check_strategy(strategy, where)
    return check_grid(grid, mask.dim() - 1, where)


def check_ref(strategy: str, grid: int, where: str) -> None:
    """One of :data:`REF_STRATEGIES` and a positive int ``grid`` (the reference cuts one square list)."""
    if strategy not in REF_STRATEGIES:
        known = ", ".join(repr(s) for s in REF_STRATEGIES)
        raise ValueError(f"{where}: strategy must be one of {known}, got {strategy!r}")
    if isinstance(grid, bool) or not isinstance(grid, int):
        raise TypeError(
            f"{where}: the reference samplers cut the list into grid x grid blocks; grid must be an int, got {grid!r}"
        )
    if grid < 1:
        raise ValueError(f"{where}: grid must be a positive integer, got {grid!r}")
