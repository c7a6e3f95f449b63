"""Pixel samplers of ARCO (You et al., NeurIPS 2023, Sec. 3.3, Fig. 2): NS, SG and SAG, and the sampling estimate.

A *group* (stratum) is the set of candidates of one image inside one cell of a regular grid over that image.
SG allocates the draws to the groups proportionally to their sizes with randomised systematic rounding (one
uniform offset per draw), so every candidate is drawn with probability ``num / |P|`` and the plain sample mean
is unbiased (Thm 3.2). SAG draws half of each group's share and adds their mirrors through the cell centre.

Layout (imports point down only; no module imports this package back):

- :mod:`arco.sampling._validate`: argument checks and the strategy names :data:`STRATEGIES`, :data:`REF_STRATEGIES`.
- :mod:`arco.sampling._strata`: group ids from grid cells, proportional allocation, the vectorised per-group draw.
- :mod:`arco.sampling.paper`: the paper's NS/SG/SAG on a mask, :func:`sample_many`, :func:`sample_per_class`.
- :mod:`arco.sampling.reference`: ``"sg-ref"``/``"sag-ref"``, the public reference code's list-block samplers
  reproduced exactly, for comparison studies only (training configs reject them).
- this module: the public dispatch :func:`sample` and :func:`estimate`.

Note: SAG follows docs/samplers.md literally (a mirror outside the candidates is replaced by a fresh draw from the
group). Candidates whose mirror is no candidate are then drawn less often, so SAG's plain mean is biased where
a cell's region is not mirror-symmetric (unbiased on symmetric regions, e.g. full masks with even cells).
"""

from __future__ import annotations

import warnings

import torch

from arco.sampling._strata import group_ids
from arco.sampling._validate import (
    REF_STRATEGIES,
    STRATEGIES,
    Grid,
    check_mask,
    check_num,
    check_ref,
    check_spatial,
)
from arco.sampling.paper import draw_mask, sample_many, sample_per_class
from arco.sampling.reference import sample_positions

__all__ = ["STRATEGIES", "REF_STRATEGIES", "sample", "estimate", "sample_per_class", "sample_many", "group_ids"]


def sample(
    mask: torch.Tensor,
    num: int,
    strategy: str,
    grid: Grid = 4,
    generator: torch.Generator | None = None,
    *,
    replace: bool = False,
) -> torch.Tensor:
    """Draw positions from a candidate mask with NS, SG or SAG (paper Sec. 3.3, Fig. 2; docs/samplers.md).

    Args:
        mask: bool ``(B, H, W)`` or ``(B, D, H, W)``, any device and memory layout: the candidates P.
        num: number of positions n to draw.
        strategy: ``"ns"`` (uniform), ``"sg"`` (stratified: proportional allocation with randomised
            systematic rounding, uniform draws inside each group) or ``"sag"`` (SG with mirrored pairs through
            each cell centre; a mirror that is no candidate or a duplicate is replaced by another draw).
            ``"sg-ref"``/``"sag-ref"`` reproduce the reference code's list-block samplers for comparison
            studies (:mod:`arco.sampling.reference`: the candidates in raster order form the list, int ``grid``
            only, always exactly ``num`` draws, with replacement; ``replace`` is ignored).
        grid: cells per spatial axis (int, or one int per axis); cells differ by at most one pixel per axis.
        generator: ``torch.Generator`` on ``mask.device`` for reproducible draws.
        replace: draw exactly ``num`` positions with replacement (SAG: the second half of each group's draws
            are the mirrors of the first half).

    Returns:
        int64 flat indices into ``mask.reshape(-1)`` on ``mask.device``, all at True positions, of length
        ``min(num, mask.sum())`` (``num`` with ``replace=True`` and for the reference strategies); empty, with
        a warning, for an empty mask. Without replacement every candidate is drawn with probability ``n / |P|``
        for all strategies but SAG. NS returns the draws in random order, SG/SAG grouped by stratum.

    Raises:
        TypeError: ``mask`` is not a bool tensor or ``grid`` not an int/tuple.
        ValueError: bad shape, ``num``, ``strategy`` or ``grid`` value.

    Example:
        >>> mask = torch.ones(2, 8, 8, dtype=torch.bool)
        >>> idx = sample(mask, 16, "sag", grid=2, generator=torch.Generator().manual_seed(0))
        >>> idx.shape, bool(mask.reshape(-1)[idx].all()), idx.unique().numel()
        (torch.Size([16]), True, 16)
    """
    where = "sample()"
    check_num(num, "num", where)
    if strategy in REF_STRATEGIES:
        check_spatial(mask, "mask", (torch.bool,), "bool", where)
        check_ref(strategy, grid, where)
        cells = ()
    else:
        cells = check_mask(mask, strategy, grid, where)
    mask_flat = mask.reshape(-1)
    flat = torch.nonzero(mask_flat).squeeze(1)  # the one unavoidable sync: the output size depends on it
    p = flat.numel()
    if p == 0:
        warnings.warn(f"{where}: the mask has no candidates; returning no indices", stacklevel=2)
    if p == 0 or num == 0:
        return flat[:0]
    if strategy in REF_STRATEGIES:
        return flat[sample_positions(p, num, strategy, grid, generator, flat.device)]
    return draw_mask(mask_flat, flat, tuple(mask.shape), cells, num, strategy, generator, replace)


def estimate(
    values: torch.Tensor,
    mask: torch.Tensor,
    num: int,
    strategy: str,
    grid: Grid = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sampling estimate of the mean of ``values`` over ``mask`` (paper eq. 3.1; SG/SAG estimators, Sec. 3.3).

    ``H_hat = (1/n) sum_{p in S} h(p)`` with S drawn by :func:`sample`; unbiased for NS and SG (Thm 3.2).

    Args:
        values: floating tensor of the mask's shape (any layout).
        mask, num, strategy, grid, generator: as :func:`sample`.

    Returns:
        0-d tensor of ``values.dtype`` on ``values.device``; NaN (with a warning) for an empty mask.
    """
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        got = getattr(values, "dtype", type(values).__name__)
        raise TypeError(f"estimate(): values must be a floating-point tensor, got {got}")
    if isinstance(mask, torch.Tensor) and values.shape != mask.shape:
        raise ValueError(
            f"estimate(): values must have the mask's shape {tuple(mask.shape)}, got {tuple(values.shape)}"
        )
    if num == 0:
        raise ValueError("estimate(): expected argument `num` to be a positive integer, but got 0")
    idx = sample(mask, num, strategy, grid, generator)
    if idx.numel() == 0:
        return torch.full((), float("nan"), dtype=values.dtype, device=values.device)
    return values.reshape(-1)[idx].mean()
