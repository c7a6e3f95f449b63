"""Pixel samplers of ARCO (You et al., NeurIPS 2023, Sec. 3.3, Fig. 2): NS, SG and SAG.

A *group* (stratum) is the set of candidates of one image inside one cell of a regular grid over that image.
SG allocates the draws to the groups proportionally to their sizes with randomised systematic rounding (one
uniform offset per draw), so every candidate is drawn with probability ``num / |P|`` and the plain sample mean
is unbiased (Thm 3.2). SAG draws half of each group's share and adds their mirrors through the cell centre.

Everything is vectorised: group ids come from cached integer maps, the draws from one sort by
``(segment, group, random key)``. A *segment* is an independent sampling problem: the mask in :func:`sample`,
one class in :func:`sample_per_class`, one Monte-Carlo trial in :func:`sample_many`.

Note: SAG follows SPEC §2 literally (a mirror outside the candidates is replaced by a fresh draw from the
group). Candidates whose mirror is no candidate are then drawn less often, so SAG's plain mean is biased where
a cell's region is not mirror-symmetric (unbiased on symmetric regions, e.g. full masks with even cells).
The reference code's list-position strata are reproduced, for comparison studies only, as the strategies
"sg-ref"/"sag-ref" of :func:`sample` and :func:`estimate` (:mod:`arco.sampling_ref`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import torch

from arco._checks import choice

__all__ = ["STRATEGIES", "sample", "estimate", "sample_per_class", "sample_many", "group_ids"]

STRATEGIES = ("ns", "sg", "sag")
# Reproductions of the reference code's list-block sampler (arco.sampling_ref): sample()/estimate() only.
REF_STRATEGIES = ("sg-ref", "sag-ref")
# Sort key = group id (< 2**23, checked in sample_many, the only caller that can get close) | 40 bits of a
# float64 uniform. Two keys of a group tie with probability < N_m^2 / 2^41; a tie orders them by position.
_KEY_BITS = 40
_Grid = int | Sequence[int]


# ------------------------------------------------------------------------------------------------ validation
def _check_grid(grid: _Grid, spatial_dims: int, where: str) -> tuple[int, ...]:
    is_int = isinstance(grid, int) and not isinstance(grid, bool)
    cells = (grid,) * spatial_dims if is_int else tuple(grid) if isinstance(grid, Sequence) else ()
    if len(cells) != spatial_dims or not all(isinstance(k, int) and not isinstance(k, bool) for k in cells):
        raise TypeError(f"{where}: grid must be an int or a tuple of {spatial_dims} ints, got {grid!r}")
    if min(cells) < 1:
        raise ValueError(f"{where}: grid must be positive in every axis, got {grid!r}")
    return cells


def _check_num(num: int, argname: str, where: str) -> int:
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ValueError(f"{where}: expected argument `{argname}` to be a non-negative integer, but got {num!r}")
    return num


def _check_spatial(t: object, name: str, dtypes: tuple[torch.dtype, ...], kind: str, where: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes or t.dim() not in (3, 4):
        error = TypeError if t.dtype not in dtypes else ValueError
        dtype = str(t.dtype).replace("torch.", "")
        raise error(
            f"{where}: {name} must be a {kind} tensor (B, H, W) or (B, D, H, W); got {dtype} of shape {tuple(t.shape)}"
        )


def _check_strategy(strategy: str, where: str) -> str:
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


# ------------------------------------------------------------------------------------------------ geometry
def _axis_tables(size: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell index and mirror coordinate of every coordinate of one axis.

    Cell j spans ``[j*L//k, (j+1)*L//k)``: cells differ by at most one pixel, and ``k > L`` leaves some cells
    empty. The mirror of x in a cell spanning r0..r1 is ``r0 + r1 - x`` (SPEC §2): it stays in the cell.
    """
    x = torch.arange(size, device=device)
    cell = ((x + 1) * k - 1) // size
    r0 = (cell * size) // k
    r1 = ((cell + 1) * size) // k - 1
    return cell, r0 + r1 - x


@functools.lru_cache(maxsize=16)
def _maps(shape: tuple[int, ...], cells: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Group id (``b * prod(cells) + cell``) and mirror flat index (both int64) of every flat position.

    Cached per (shape, grid, device): training calls the sampler with the same shapes every step, and a gather
    from a map is several times cheaper than div/mod arithmetic on every candidate.
    """
    cell = torch.arange(shape[0], device=device)
    mirror = cell
    for size, k in zip(shape[1:], cells):  # <= 3 axes; broadcasting builds the maps
        ctab, mtab = _axis_tables(size, k, device)
        cell = cell[..., None] * k + ctab
        mirror = mirror[..., None] * size + mtab
    return cell.reshape(-1), mirror.reshape(-1)


def group_ids(shape: Sequence[int], grid: _Grid = 4, device: torch.device | str | None = None) -> torch.Tensor:
    """Stratum (group) id of every position of a ``(B, *spatial)`` tensor: ``b * prod(grid) + cell``.

    Returns an int64 tensor of ``shape`` (ids in ``[0, B * prod(grid))``); used by diagnostics and tests.
    """
    shape = tuple(int(s) for s in shape)
    cells = _check_grid(grid, len(shape) - 1, "group_ids()")
    return _maps(shape, cells, torch.device(device or "cpu"))[0].view(shape).clone()  # the map is cached


# ------------------------------------------------------------------------------------------------ core
def _allocate(counts: torch.Tensor, num: int, generator: torch.Generator | None, cap: bool = True) -> torch.Tensor:
    """Proportional allocation ``n_m ≈ n |P_m| / |P|`` with randomised systematic rounding (SPEC §2).

    ``counts`` is ``(S, G)`` int64; returns ``(S, G)`` int64 with row sums exactly ``n = min(num, |P_s|)``
    (``num`` when ``cap`` is False: draws with replacement).
    With ``v`` uniform on ``{0, ..., |P|-1}`` and C the cumulative counts,
    ``n_m = floor((C_m n + v) / |P|) - floor((C_{m-1} n + v) / |P|)``; by Hermite's identity
    ``E[n_m] = n |P_m| / |P|`` exactly, so every candidate is drawn with probability ``n / |P|``.
    """
    total = counts.sum(1)
    n = (total.clamp(max=num) if cap else torch.full_like(total, num))[:, None]
    u = torch.rand(total.shape, generator=generator, device=counts.device, dtype=torch.float64)
    v = torch.minimum((u * total).floor().long(), (total - 1).clamp(min=0))[:, None]
    denom = total.clamp(min=1)[:, None]
    cum = torch.cumsum(counts, 1)
    return (cum * n + v) // denom - ((cum - counts) * n + v) // denom


def _count(ids: torch.Tensor, size: int) -> torch.Tensor:
    """``bincount`` with a static output size: CUDA's bincount reads the maximum back to the host."""
    return torch.zeros(size, dtype=torch.long, device=ids.device).scatter_add_(0, ids, torch.ones_like(ids))


def _group_rank(flag: torch.Tensor, starts_of: torch.Tensor) -> torch.Tensor:
    """Rank of each element among the flagged elements of its group (groups are contiguous after the sort)."""
    excl = torch.cumsum(flag.long(), 0) - flag.long()
    return excl - excl.index_select(0, starts_of)


def _sort_key(gid: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """int64 key ordering entries by group, then by their float64 uniform key (40 bits of it)."""
    return (gid << _KEY_BITS) | (u * float(1 << _KEY_BITS)).long()


def _draw(
    gid: torch.Tensor,
    u: torch.Tensor,
    alloc: torch.Tensor,
    num: int,
    pos: torch.Tensor,
    sag: tuple[torch.Tensor, torch.Tensor, int] | None,
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw ``alloc[s, m]`` entries of every group without replacement; static shapes, no host sync.

    Args:
        gid: ``(K,)`` int64 ``segment * G + group`` of each entry; ``S * G`` marks entries of no segment.
        u: ``(K,)`` float64 uniform keys; a group's draw is its ``n_m`` smallest keys (uniform, no replacing).
            Entries may be a random subset (see :func:`_prefilter`) holding at least ``n_m`` of each group.
        alloc: ``(S, G)`` int64 draws per group (row sums <= num).
        num: output width.
        pos: ``(K,)`` int64 position id of each entry (what the output holds).
        sag: for SAG, ``(mirror_pos, mirror_ok, Q)``: each entry's mirror position id, whether that mirror is
            a candidate of the same group, and the size of the position-id space.
        order: the entries sorted by (gid, key), when the caller already has it (``u`` is then unused).

    Returns:
        ``(S, num)`` int64 position ids; row s holds its ``alloc[s].sum()`` draws first, then zeros.
    """
    device, k = gid.device, gid.numel()
    num_segments, num_groups = alloc.shape
    ng = alloc.numel()
    full = _count(gid, ng + 1)
    starts = torch.cumsum(full, 0) - full
    n_m = torch.cat([alloc.reshape(-1), alloc.new_zeros(1)])
    off = torch.cat([(torch.cumsum(alloc, 1) - alloc).reshape(-1), alloc.new_zeros(1)])
    order = torch.sort(_sort_key(gid, u)).indices if order is None else order
    gs = gid.index_select(0, order)
    starts_of = starts.index_select(0, gs)
    rank = torch.arange(k, device=device) - starts_of
    p_sorted = pos.index_select(0, order)
    # Output slot of a group's first draw: segment * num + draws of the earlier groups of the segment.
    seg_of = torch.div(torch.arange(ng + 1, device=device), num_groups, rounding_mode="floor")
    base = (seg_of * num + off).index_select(0, gs)
    dump = num_segments * num
    out = torch.zeros(dump + 1, dtype=torch.long, device=device)
    if sag is None:
        out.scatter_(0, torch.where(rank < n_m.index_select(0, gs), base + rank, dump), p_sorted)
        return out[:-1].view(num_segments, num)
    mirror_pos, mirror_ok, q = sag
    # ceil(n_m / 2) primaries, floor(n_m / 2) partners: the last primary's mirror is trimmed when n_m is odd.
    half = ((n_m + 1) // 2).index_select(0, gs)
    pair = n_m // 2
    primary = rank < half
    is_primary = torch.zeros(q + 1, dtype=torch.bool, device=device)
    is_primary.scatter_(0, torch.where(primary, p_sorted, q), True)
    ms = mirror_pos.index_select(0, order)
    good = rank < pair.index_select(0, gs)
    good &= mirror_ok.index_select(0, order) & (ms != p_sorted) & ~is_primary.index_select(0, ms)
    taken = torch.zeros(q + 1, dtype=torch.bool, device=device)
    taken.scatter_(0, torch.where(good, ms, q), True)
    # A mirror that is no candidate (or a duplicate) is replaced by a further uniform draw from the group: the
    # next entries in key order that are neither primaries nor accepted mirrors.
    n_good = torch.zeros_like(n_m).scatter_add_(0, gs, good.long())
    pool = ~primary & ~taken.index_select(0, p_sorted)
    pool_rank = _group_rank(pool, starts_of)
    extra = pool & (pool_rank < (pair - n_good).index_select(0, gs))
    first = torch.where(primary, rank, half + n_good.index_select(0, gs) + pool_rank)
    out.scatter_(0, torch.where(primary | extra, base + first, dump), p_sorted)
    out.scatter_(0, torch.where(good, base + half + _group_rank(good, starts_of), dump), ms)
    return out[:-1].view(num_segments, num)


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
    if bool((_count(gid, trials * groups).view(trials, groups) >= alloc).all()):
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
    cell_map, mirror_map = _maps(shape, cells, flat.device)
    numel, groups, p = mask_flat.numel(), shape[0] * math.prod(cells), flat.numel()
    g0 = cell_map.index_select(0, flat)
    counts = torch.bincount(g0, minlength=groups)[None].expand(trials, groups)
    alloc = _allocate(counts, num, generator)
    n_m = alloc[0].double()
    if trials > 1 and float((n_m + 6 * n_m.sqrt() + 8).sum()) > p / 4:
        # Few candidates per draw: prefiltering would keep most entries, and one sort per trial row (batched)
        # is far cheaper than one global sort; the rows are already in trial order.
        u = torch.rand((trials, p), generator=generator, device=flat.device, dtype=torch.float64)
        row = torch.sort(_sort_key(g0.expand(trials, p), u), dim=1).indices
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
    return _draw(gid, u.reshape(-1), alloc, num, tk + fk, sag, order) % numel


def _check_mask(mask: object, strategy: str, grid: _Grid, where: str) -> tuple[int, ...]:
    _check_spatial(mask, "mask", (torch.bool,), "bool", where)
    _check_strategy(strategy, where)
    return _check_grid(grid, mask.dim() - 1, where)


def sample(
    mask: torch.Tensor,
    num: int,
    strategy: str,
    grid: _Grid = 4,
    generator: torch.Generator | None = None,
    *,
    replace: bool = False,
) -> torch.Tensor:
    """Draw positions from a candidate mask with NS, SG or SAG (paper Sec. 3.3, Fig. 2; SPEC §2).

    Args:
        mask: bool ``(B, H, W)`` or ``(B, D, H, W)``, any device and memory layout: the candidates P.
        num: number of positions n to draw.
        strategy: ``"ns"`` (uniform), ``"sg"`` (stratified: proportional allocation with randomised
            systematic rounding, uniform draws inside each group) or ``"sag"`` (SG with mirrored pairs through
            each cell centre; a mirror that is no candidate or a duplicate is replaced by another draw).
            ``"sg-ref"``/``"sag-ref"`` reproduce the reference code's list-block sampler for comparison
            studies (:mod:`arco.sampling_ref`: int ``grid`` only, always ``num`` draws with replacement).
        grid: cells per spatial axis (int, or one int per axis); cells differ by at most one pixel per axis.
        generator: ``torch.Generator`` on ``mask.device`` for reproducible draws.
        replace: draw exactly ``num`` positions with replacement (SAG: the second half of each group's draws
            are the mirrors of the first half).

    Returns:
        int64 flat indices into ``mask.reshape(-1)`` on ``mask.device``, all at True positions, of length
        ``min(num, mask.sum())`` (``num`` with ``replace=True``); empty, with a warning, for an empty mask.
        Without replacement every candidate is drawn with probability ``n / |P|`` for all strategies but SAG.
        NS returns the draws in random order, SG/SAG grouped by stratum.

    Raises:
        TypeError: ``mask`` is not a bool tensor or ``grid`` not an int/tuple.
        ValueError: bad shape, ``num``, ``strategy`` or ``grid`` value.

    Example:
        >>> mask = torch.ones(2, 8, 8, dtype=torch.bool)
        >>> idx = sample(mask, 16, "sag", grid=2, generator=torch.Generator().manual_seed(0))
        >>> idx.shape, bool(mask.reshape(-1)[idx].all()), idx.unique().numel()
        (torch.Size([16]), True, 16)
    """
    if strategy in REF_STRATEGIES:
        from arco.sampling_ref import sample_ref  # imports this module: no import cycle at load time

        return sample_ref(mask, num, strategy, grid, generator)
    where = "sample()"
    _check_num(num, "num", where)
    cells = _check_mask(mask, strategy, grid, where)
    mask_flat = mask.reshape(-1)
    flat = torch.nonzero(mask_flat).squeeze(1)  # the one unavoidable sync: the output size depends on it
    p = flat.numel()
    if p == 0:
        warnings.warn(f"{where}: the mask has no candidates; returning no indices", stacklevel=2)
    if p == 0 or num == 0:
        return flat[:0]
    if replace:
        return _with_replacement(mask_flat, flat, tuple(mask.shape), cells, num, strategy, generator)
    if strategy == "ns":  # random keys + top-k: the cheapest uniform draw without replacement
        u = torch.rand(p, generator=generator, device=flat.device)
        return flat[torch.topk(u, min(num, p), sorted=False).indices]
    out = _stratified(mask_flat, flat, tuple(mask.shape), cells, num, 1, strategy == "sag", generator)
    return out[0, : min(num, p)]


def _with_replacement(mask_flat, flat, shape, cells, num, strategy, generator) -> torch.Tensor:
    """``num`` draws with replacement: proportional counts, uniform draws inside each group; SAG pairs the
    second half of a group's slots with the mirrors of the first half (a fresh draw if it is no candidate)."""
    p, device = flat.numel(), flat.device
    if strategy == "ns":
        return flat[torch.randint(0, p, (num,), generator=generator, device=device)]
    cell_map, mirror_map = _maps(shape, cells, device)
    g0 = cell_map[flat]
    counts = torch.bincount(g0, minlength=shape[0] * math.prod(cells))
    alloc = _allocate(counts[None], num, generator, cap=False)[0]  # sums to num: |P| is no cap here
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


def estimate(
    values: torch.Tensor,
    mask: torch.Tensor,
    num: int,
    strategy: str,
    grid: _Grid = 4,
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


def sample_many(
    mask: torch.Tensor,
    num: int,
    strategy: str,
    trials: int,
    grid: _Grid = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``trials`` independent draws of :func:`sample` in one vectorised call (Monte-Carlo studies, tests).

    Returns:
        int64 ``(trials, min(num, mask.sum()))`` flat indices into ``mask.reshape(-1)``; every row is
        distributed as ``sample(mask, num, strategy, grid)``.
    """
    where = "sample_many()"
    _check_num(num, "num", where)
    _check_num(trials, "trials", where)
    cells = _check_mask(mask, strategy, grid, where)
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
    grid: _Grid = 4,
    valid: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw up to ``num`` positions of every class at once (queries and negatives of eq. E.2).

    Class c is sampled as :func:`sample` samples the mask ``(label == c) & valid``, with the strata of SPEC §2
    (grid cells of each image intersected with the class region). All classes share one sort: no loop over
    classes, no host sync, static output shapes.

    Args:
        label: integer ``(B, H, W)`` or ``(B, D, H, W)``; values outside ``0..num_classes-1`` are never drawn.
        num_classes: C.
        num, strategy, grid, generator: as :func:`sample`.
        valid: optional bool tensor of the label's shape; False positions are never drawn.

    Returns:
        ``index (C, num)`` int64 flat indices into ``label.reshape(-1)`` and ``ok (C, num)`` bool. Row c holds
        ``min(num, |P_c|)`` draws first (grouped by stratum, not shuffled); the rest are 0 with ``ok`` False.
    """
    where = "sample_per_class()"
    ints = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
    _check_spatial(label, "label", ints, "integer", where)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{where}: expected argument `num_classes` to be a positive integer, but got {num_classes!r}")
    _check_num(num, "num", where)
    _check_strategy(strategy, where)
    cells = _check_grid(grid, label.dim() - 1, where)
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
    cell_map, mirror_map = _maps(shape, cells, device)
    groups = 1 if strategy == "ns" else shape[0] * math.prod(cells)
    within = 0 if strategy == "ns" else cell_map
    gid = torch.where(keep, lab.clamp(0, num_classes - 1) * groups + within, num_classes * groups)
    counts = _count(gid, num_classes * groups + 1)[:-1].view(num_classes, groups)
    alloc = _allocate(counts, num, generator)
    u = torch.rand(gid.shape, generator=generator, device=device, dtype=torch.float64)
    flat = torch.arange(lab.numel(), device=device)
    sag = (mirror_map, gid.index_select(0, mirror_map) == gid, lab.numel()) if strategy == "sag" else None
    index = _draw(gid, u, alloc, num, flat, sag)
    ok = torch.arange(num, device=device) < counts.sum(1, keepdim=True).clamp(max=num)
    return index, ok
