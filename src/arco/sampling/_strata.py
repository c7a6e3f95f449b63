"""Strata of the paper's samplers: group ids from grid cells, proportional allocation, the per-group draw.

A *group* (stratum) is the set of candidates of one image inside one cell of a regular grid over that image
(docs/samplers.md). Everything here is vectorised and free of host syncs: group ids and mirrors come from cached
integer maps, the draws from one sort by ``(segment, group, random key)``, where a *segment* is an independent
sampling problem (the mask of one ``sample`` call, one class, one Monte-Carlo trial).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from arco.sampling._validate import Grid, check_grid

__all__ = ["group_ids", "cell_maps", "allocate", "count", "group_rank", "sort_key", "draw_groups", "KEY_BITS"]

# Sort key = group id (< 2**23, checked in sample_many, the only caller that can get close) | 40 bits of a
# float64 uniform. Two keys of a group tie with probability < N_m^2 / 2^41; a tie orders them by position.
KEY_BITS = 40


def axis_tables(size: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell index and mirror coordinate of every coordinate of one axis.

    Cell j spans ``[j*L//k, (j+1)*L//k)``: cells differ by at most one pixel, and ``k > L`` leaves some cells
    empty. The mirror of x in a cell spanning r0..r1 is ``r0 + r1 - x`` (docs/samplers.md): it stays in the cell.
    """
    x = torch.arange(size, device=device)
    cell = ((x + 1) * k - 1) // size
    r0 = (cell * size) // k
    r1 = ((cell + 1) * size) // k - 1
    return cell, r0 + r1 - x


@functools.lru_cache(maxsize=16)
def cell_maps(shape: tuple[int, ...], cells: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Group id (``b * prod(cells) + cell``) and mirror flat index (both int64) of every flat position.

    Cached per (shape, grid, device): training calls the sampler with the same shapes every step, and a gather
    from a map is several times cheaper than div/mod arithmetic on every candidate.
    """
    cell = torch.arange(shape[0], device=device)
    mirror = cell
    for size, k in zip(shape[1:], cells):  # <= 3 axes; broadcasting builds the maps
        ctab, mtab = axis_tables(size, k, device)
        cell = cell[..., None] * k + ctab
        mirror = mirror[..., None] * size + mtab
    return cell.reshape(-1), mirror.reshape(-1)


def group_ids(shape: Sequence[int], grid: Grid = 4, device: torch.device | str | None = None) -> torch.Tensor:
    """Stratum (group) id of every position of a ``(B, *spatial)`` tensor: ``b * prod(grid) + cell``.

    Returns an int64 tensor of ``shape`` (ids in ``[0, B * prod(grid))``); used by diagnostics and tests.
    """
    shape = tuple(int(s) for s in shape)
    cells = check_grid(grid, len(shape) - 1, "group_ids()")
    return cell_maps(shape, cells, torch.device(device or "cpu"))[0].view(shape).clone()  # the map is cached


# ------------------------------------------------------------------------------------------------ core
def allocate(counts: torch.Tensor, num: int, generator: torch.Generator | None, cap: bool = True) -> torch.Tensor:
    """Proportional allocation ``n_m ≈ n |P_m| / |P|`` with randomised systematic rounding (docs/samplers.md).

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


def count(ids: torch.Tensor, size: int) -> torch.Tensor:
    """``bincount`` with a static output size: CUDA's bincount reads the maximum back to the host."""
    return torch.zeros(size, dtype=torch.long, device=ids.device).scatter_add_(0, ids, torch.ones_like(ids))


def group_rank(flag: torch.Tensor, starts_of: torch.Tensor) -> torch.Tensor:
    """Rank of each element among the flagged elements of its group (groups are contiguous after the sort)."""
    excl = torch.cumsum(flag.long(), 0) - flag.long()
    return excl - excl.index_select(0, starts_of)


def sort_key(gid: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """int64 key ordering entries by group, then by their float64 uniform key (40 bits of it)."""
    return (gid << KEY_BITS) | (u * float(1 << KEY_BITS)).long()


def draw_groups(
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
            Entries may be a random subset (see :func:`arco.sampling.paper._prefilter`) holding at least
            ``n_m`` of each group.
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
    full = count(gid, ng + 1)
    starts = torch.cumsum(full, 0) - full
    n_m = torch.cat([alloc.reshape(-1), alloc.new_zeros(1)])
    off = torch.cat([(torch.cumsum(alloc, 1) - alloc).reshape(-1), alloc.new_zeros(1)])
    order = torch.sort(sort_key(gid, u)).indices if order is None else order
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
    pool_rank = group_rank(pool, starts_of)
    extra = pool & (pool_rank < (pair - n_good).index_select(0, gs))
    first = torch.where(primary, rank, half + n_good.index_select(0, gs) + pool_rank)
    out.scatter_(0, torch.where(primary | extra, base + first, dump), p_sorted)
    out.scatter_(0, torch.where(good, base + half + group_rank(good, starts_of), dump), ms)
    return out[:-1].view(num_segments, num)
