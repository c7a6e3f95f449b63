"""The paper's samplers (You et al., NeurIPS 2023, Sec. 3.3, Fig. 2): NS, SG and SAG draws on a mask.

SG allocates the draws to the groups (grid cells of each image intersected with the candidates,
:mod:`arco.sampling._strata`) proportionally to their sizes with randomised systematic rounding, so every
candidate is drawn with probability ``num / |P|`` and the plain sample mean is unbiased (Thm 3.2). SAG draws half
of each group's share and adds their mirrors through the cell centre (docs/samplers.md: a mirror outside the
candidates is replaced by a fresh draw from the group, which biases SAG's plain mean where a cell's region is not
mirror-symmetric). The public entry points are :func:`arco.sampling.sample` (which calls :func:`draw_mask`),
:func:`sample_many` and :func:`sample_per_class`.
"""

from __future__ import annotations

import math

import torch

from arco.sampling._strata import allocate, cell_maps, count, draw_groups, sort_key
from arco.sampling._validate import Grid, check_grid, check_mask, check_num, check_spatial, check_strategy

__all__ = ["draw_mask", "sample_many", "sample_per_class"]


def _prefilter(
    g0: torch.Tensor, alloc: torch.Tensor, counts: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Flat ``trial * P + candidate`` indices of a random superset of every draw: Bernoulli(tau_m) per entry.

    tau_m keeps ``n_m + 6 sqrt(n_m) + 8`` entries of a group on average. Entries are kept independently with
    the same probability within a group, so given its size the kept set is a uniform subset, and ``n_m``
    uniform draws from it (fresh keys) are ``n_m`` uniform draws from the group. If any group keeps fewer than
    ``n_m`` (astronomically rare) all entries are kept. One host sync; callers already need one.
    """
    trials, groups = alloc.shape
    p = g0.numel()
    n_m = alloc.double()
    tau = ((n_m + 6 * n_m.sqrt() + 8) / counts.clamp(min=1)).float()
    u = torch.rand((trials, p), generator=generator, device=g0.device)
    keep = torch.nonzero((u < tau.index_select(1, g0)).view(-1)).squeeze(1)
    gid = torch.div(keep, p, rounding_mode="floor") * groups + g0.index_select(0, keep % p)
    if bool((count(gid, trials * groups).view(trials, groups) >= alloc).all()):
        return keep
    return torch.arange(trials * p, device=g0.device)


def _stratified(
    mask_flat: torch.Tensor,
    flat: torch.Tensor,
    shape: tuple[int, ...],
    cells: tuple[int, ...],
    num: int,
    trials: int,
    antithetic: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """SG/SAG for ``trials`` independent draws from the candidates ``flat``: ``(trials, num)`` flat index."""
    cell_map, mirror_map = cell_maps(shape, cells, flat.device)
    numel, groups, p = mask_flat.numel(), shape[0] * math.prod(cells), flat.numel()
    g0 = cell_map.index_select(0, flat)
    counts = torch.bincount(g0, minlength=groups)[None].expand(trials, groups)
    alloc = allocate(counts, num, generator)
    n_m = alloc[0].double()
    if trials > 1 and float((n_m + 6 * n_m.sqrt() + 8).sum()) > p / 4:
        # Few candidates per draw: prefiltering would keep most entries, and one sort per trial row (batched)
        # is far cheaper than one global sort; the rows are already in trial order.
        u = torch.rand((trials, p), generator=generator, device=flat.device, dtype=torch.float64)
        row = torch.sort(sort_key(g0.expand(trials, p), u), dim=1).indices
        t = torch.arange(trials, device=flat.device)
        order = (row + t[:, None] * p).reshape(-1)
        gid = (t[:, None] * groups + g0).reshape(-1)
        fk, tk = flat.repeat(trials), t.repeat_interleave(p) * numel
    else:
        keep = _prefilter(g0, alloc, counts, generator)
        ck = keep % p
        gid = torch.div(keep, p, rounding_mode="floor") * groups + g0.index_select(0, ck)
        fk, tk = flat.index_select(0, ck), torch.div(keep, p, rounding_mode="floor") * numel
        u = torch.rand(keep.shape, generator=generator, device=flat.device, dtype=torch.float64)
        order = None
    sag = None
    if antithetic:
        mk = mirror_map.index_select(0, fk)
        sag = (tk + mk, mask_flat.index_select(0, mk), trials * numel)
    return draw_groups(gid, u.reshape(-1), alloc, num, tk + fk, sag, order) % numel


def draw_mask(
    mask_flat: torch.Tensor,
    flat: torch.Tensor,
    shape: tuple[int, ...],
    cells: tuple[int, ...],
    num: int,
    strategy: str,
    generator: torch.Generator | None,
    replace: bool,
) -> torch.Tensor:
    """NS/SG/SAG draw of :func:`arco.sampling.sample` on validated input with ``num >= 1`` and ``P`` non-empty.

    Args:
        mask_flat: the mask as ``(numel,)`` bool; ``flat`` its candidates (``torch.nonzero``, raster order).
        shape: the mask's shape; ``cells`` the cells per spatial axis.
        num, strategy, generator, replace: as :func:`arco.sampling.sample`.

    Returns:
        int64 flat indices, ``min(num, |P|)`` of them (``num`` with ``replace``).
    """
    p = flat.numel()
    if replace:
        return _with_replacement(mask_flat, flat, shape, cells, num, strategy, generator)
    if strategy == "ns":  # random keys + top-k: the cheapest uniform draw without replacement
        u = torch.rand(p, generator=generator, device=flat.device)
        return flat[torch.topk(u, min(num, p), sorted=False).indices]
    out = _stratified(mask_flat, flat, shape, cells, num, 1, strategy == "sag", generator)
    return out[0, : min(num, p)]


def _with_replacement(mask_flat, flat, shape, cells, num, strategy, generator) -> torch.Tensor:
    """``num`` draws with replacement: proportional counts, uniform draws inside each group; SAG pairs the
    second half of a group's slots with the mirrors of the first half (a fresh draw if it is no candidate)."""
    p, device = flat.numel(), flat.device
    if strategy == "ns":
        return flat[torch.randint(0, p, (num,), generator=generator, device=device)]
    cell_map, mirror_map = cell_maps(shape, cells, device)
    g0 = cell_map[flat]
    counts = torch.bincount(g0, minlength=shape[0] * math.prod(cells))
    alloc = allocate(counts[None], num, generator, cap=False)[0]  # sums to num: |P| is no cap here
    ends = torch.cumsum(alloc, 0)
    slot = torch.arange(num, device=device)
    g = torch.searchsorted(ends, slot, right=True)
    order = torch.sort(g0).indices
    u = torch.rand(num, generator=generator, device=device, dtype=torch.float64)
    within = torch.minimum((u * counts[g]).floor().long(), counts[g] - 1)
    pick = flat[order[(torch.cumsum(counts, 0) - counts)[g] + within]]
    if strategy == "sag":
        half = (alloc[g] + 1) // 2
        partner = mirror_map[pick[(slot - half).clamp(min=0)]]
        use = (slot - (ends - alloc)[g] >= half) & mask_flat[partner]
        pick = torch.where(use, partner, pick)
    return pick


def sample_many(
    mask: torch.Tensor,
    num: int,
    strategy: str,
    trials: int,
    grid: Grid = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``trials`` independent draws of :func:`arco.sampling.sample` in one vectorised call (Monte-Carlo studies, tests).

    Returns:
        int64 ``(trials, min(num, mask.sum()))`` flat indices into ``mask.reshape(-1)``; every row is
        distributed as ``sample(mask, num, strategy, grid)``.
    """
    where = "sample_many()"
    check_num(num, "num", where)
    check_num(trials, "trials", where)
    cells = check_mask(mask, strategy, grid, where)
    mask_flat = mask.reshape(-1)
    flat = torch.nonzero(mask_flat).squeeze(1)
    k = min(num, flat.numel())
    if k == 0 or trials == 0:
        return flat.new_zeros((trials, k))
    if trials * mask.shape[0] * math.prod(cells) >= 1 << 23:
        raise ValueError(f"{where}: trials x images x cells must stay below 2**23; draw fewer trials per call")
    if strategy == "ns":
        u = torch.rand((trials, flat.numel()), generator=generator, device=flat.device)
        return flat[torch.topk(u, k, dim=1, sorted=False).indices]
    out = _stratified(mask_flat, flat, tuple(mask.shape), cells, num, trials, strategy == "sag", generator)
    return out[:, :k]


def sample_per_class(
    label: torch.Tensor,
    num_classes: int,
    num: int,
    strategy: str,
    grid: Grid = 4,
    valid: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw up to ``num`` positions of every class at once (queries and negatives of eq. E.2).

    Class c is sampled as :func:`arco.sampling.sample` samples the mask ``(label == c) & valid``, with the strata
    of docs/samplers.md (grid cells of each image intersected with the class region). All classes share one sort:
    no loop over classes, no host sync, static output shapes.

    Args:
        label: integer ``(B, H, W)`` or ``(B, D, H, W)``; values outside ``0..num_classes-1`` are never drawn.
        num_classes: C.
        num, strategy, grid, generator: as :func:`arco.sampling.sample`.
        valid: optional bool tensor of the label's shape; False positions are never drawn.

    Returns:
        ``index (C, num)`` int64 flat indices into ``label.reshape(-1)`` and ``ok (C, num)`` bool. Row c holds
        ``min(num, |P_c|)`` draws first (grouped by stratum, not shuffled); the rest are 0 with ``ok`` False.
    """
    where = "sample_per_class()"
    ints = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
    check_spatial(label, "label", ints, "integer", where)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{where}: expected argument `num_classes` to be a positive integer, but got {num_classes!r}")
    check_num(num, "num", where)
    check_strategy(strategy, where)
    cells = check_grid(grid, label.dim() - 1, where)
    if valid is not None and (
        not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool or valid.shape != label.shape
    ):
        got = f"{getattr(valid, 'dtype', type(valid).__name__)} of shape {tuple(getattr(valid, 'shape', ()))}"
        raise ValueError(f"{where}: valid must be a bool tensor of shape {tuple(label.shape)}; got {got}")
    shape, device = tuple(label.shape), label.device
    lab = label.reshape(-1).long()
    keep = (lab >= 0) & (lab < num_classes)
    if valid is not None:
        keep &= valid.reshape(-1)
    cell_map, mirror_map = cell_maps(shape, cells, device)
    groups = 1 if strategy == "ns" else shape[0] * math.prod(cells)
    within = 0 if strategy == "ns" else cell_map
    gid = torch.where(keep, lab.clamp(0, num_classes - 1) * groups + within, num_classes * groups)
    counts = count(gid, num_classes * groups + 1)[:-1].view(num_classes, groups)
    alloc = allocate(counts, num, generator)
    u = torch.rand(gid.shape, generator=generator, device=device, dtype=torch.float64)
    flat = torch.arange(lab.numel(), device=device)
    sag = (mirror_map, gid.index_select(0, mirror_map) == gid, lab.numel()) if strategy == "sag" else None
    index = draw_groups(gid, u, alloc, num, flat, sag)
    ok = torch.arange(num, device=device) < counts.sum(1, keepdim=True).clamp(max=num)
    return index, ok
