"""The reference code's samplers reproduced exactly, for comparison studies only (docs/samplers.md).

``"sg-ref"`` and ``"sag-ref"`` are ``grid_monte_carlo_sample`` and ``grid_as_monte_carlo_sample`` of
charlesyou999648/ARCO (``code/loss_helper.py``; ``loss_helper_3d.py`` has the same functions). They are NOT the
paper's SG/SAG (Sec. 3.3; :mod:`arco.sampling.paper`): the reference stratifies positions of a flat list, not
regions of an image. ``compute_contra_memobank_loss`` calls them with the length N of a list of candidates
(pixels of a class, in raster order over the batch; or a memory bank) and S draws, and indexes the list with
the result. With ``grid`` (the reference's ``cut_count``, 4 there):

1. The list positions are laid out row-major as a square of side ``edge = round(sqrt(N))``. Positions >= N do
   not exist; positions N > p >= ``edge**2`` are outside the square, reached only by the top-up of step 4.
2. The square is cut into ``grid x grid`` blocks of side ``edge // grid``; the last block row and column
   extend to the edge (so they are larger when ``edge % grid != 0``).
3. Every block gets ``per = S * edge**2 // N // grid**2`` draws, uniform with replacement over its positions.
   ``"sag-ref"`` draws ``per // 2`` and keeps each with its mirror ``2 * mean(block positions) - p``: the
   reference truncates ``2 * mean`` to int64, which is exact (for a rectangle ``r0..r1 x c0..c1`` of the
   square it is the integer ``(r0 + r1) * edge + c0 + c1``), so the mirror is the point reflection
   ``(r0 + r1 - r, c0 + c1 - c)`` and stays in the block.
4. Draws at positions >= N are dropped, the rest shuffled; then uniform draws over ``[0, N)`` are appended one
   at a time until there are S, and the list is cut to its first S entries (a uniform subset when more than S
   draws were kept, which can happen only when ``edge**2 > N``).

Fallback. The reference wraps all this in a bare ``except`` that calls its naive samplers
``monte_carlo_sample`` / ``as_monte_carlo_sample`` (``patch=16``). The stratified code raises whenever a block
holds fewer than two positions: an empty block (``edge < grid``) makes ``torch.randint(0, ...)`` fail, and a
one-position block is indexed by a one-element tensor, which NumPy reads as a scalar index, so the block's
``.shape[0]`` fails (checked by running the reference functions with NumPy 2.4 and torch 2.13; other versions
were not tried). At ``grid = 4`` that is every ``N <= 56`` (``edge <= 7``). The naive samplers draw S uniformly
over ``[0, N)`` when ``N < 16`` or ``N // 16 > S``; otherwise they cut ``[0, 16 * (N // 16))`` into runs of 16,
give every run ``S // (N // 16)`` uniform draws (``"sag-ref"``: half of them, rounded down, each with its mirror
``32 i + 15 - p`` in run i), top up with uniform draws over ``[0, N)`` to S and shuffle all S. So at
``grid = 4`` a list of ``N <= 15`` is sampled uniformly and one of 16..56 by runs of 16, where positions past
the last full run are reached only by the top-up. This module reproduces that fallback rather than raising (arco's own
algorithms never fall back silently, docs/design.md; here it is the behaviour being reproduced, and it is documented).

Differences that cannot matter: the random streams (the reference uses the global torch and Python generators;
here one explicit ``torch.Generator``) and the reference's float32 round trip of the positions, exact below
``2**24`` candidates (we keep int64). Everything is vectorised; the only host sync is reading N.
"""

from __future__ import annotations

import math

import torch

from arco.sampling._validate import check_num, check_ref

__all__ = ["sample_positions"]

# monte_carlo_sample's default run length, which the reference's fallback uses.
_NAIVE_PATCH = 16


def sample_positions(
    num_candidates: int,
    num: int,
    strategy: str,
    grid: int = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Positions in a list of ``num_candidates`` drawn as the reference's grid samplers draw them.

    ``sample(mask, num, "sg-ref")`` returns ``flat[sample_positions(len(flat), num, "sg-ref")]`` with
    ``flat = torch.nonzero(mask.reshape(-1))`` (the candidates in raster order). See the module docstring for
    the exact behaviour.

    Args:
        num_candidates: N, the length of the list (the reference's ``high``).
        num: S, the number of draws (the reference's ``shape``); always returned exactly, with replacement.
        strategy: ``"sg-ref"`` (``grid_monte_carlo_sample``) or ``"sag-ref"`` (``grid_as_monte_carlo_sample``).
        grid: blocks per side of the square (the reference's ``cut_count``, 4 there).
        generator: ``torch.Generator`` on ``device``.
        device: output device (default CPU).

    Returns:
        int64 ``(num,)`` positions in ``[0, N)`` on ``device``: the shuffled kept block draws, then the top-up.

    Raises:
        ValueError: bad ``num``/``num_candidates``/``strategy``/``grid``, or ``num > 0`` with no candidates.
        TypeError: ``grid`` is not an int.

    Example:
        >>> pos = sample_positions(100, 64, "sag-ref", generator=torch.Generator().manual_seed(0))
        >>> pos.shape, bool(((pos >= 0) & (pos < 100)).all())
        (torch.Size([64]), True)
    """
    where = "sample_positions()"
    n = check_num(num_candidates, "num_candidates", where)
    check_num(num, "num", where)
    check_ref(strategy, grid, where)
    device = torch.device("cpu" if device is None else device)
    if n == 0 and num > 0:
        raise ValueError(f"{where}: cannot draw {num} positions from an empty list (num_candidates=0)")
    if num == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    antithetic = strategy == "sag-ref"
    edge = round(math.sqrt(n))
    smallest_side = edge if grid == 1 else edge // grid  # block (0, 0) is the smallest
    if smallest_side < 2:
        return _naive(n, num, antithetic, generator, device)
    return _blocks(n, num, edge, grid, antithetic, generator, device)


def _blocks(
    n: int, num: int, edge: int, grid: int, antithetic: bool, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Steps 1-4 of the module docstring: equal draws per block of the ``edge x edge`` square, drop, top up."""
    side = edge // grid
    per = num * edge * edge // n // (grid * grid)
    k = per // 2 if antithetic else per
    start = torch.arange(grid, device=device) * side
    size = torch.full((grid,), side, device=device)
    size[-1] = edge - (grid - 1) * side
    block = torch.arange(grid * grid, device=device).repeat_interleave(k)
    bi, bj = torch.div(block, grid, rounding_mode="floor"), block % grid
    h, w = size.index_select(0, bi), size.index_select(0, bj)
    u = torch.rand(block.numel(), generator=generator, device=device, dtype=torch.float64)
    cell = torch.minimum((u * (h * w)).floor().long(), h * w - 1)  # uniform over the block's h*w positions
    r0, c0 = start.index_select(0, bi), start.index_select(0, bj)
    pos = (r0 + torch.div(cell, w, rounding_mode="floor")) * edge + c0 + cell % w
    if antithetic:
        twice_mean = (2 * r0 + h - 1) * edge + 2 * c0 + w - 1
        pos = torch.cat([pos, twice_mean - pos])
    return _shuffle_and_top_up(pos, n, num, generator)


def _shuffle_and_top_up(pos: torch.Tensor, n: int, num: int, generator: torch.Generator | None) -> torch.Tensor:
    """Drop positions >= n, shuffle the rest, cut to ``num``; fill what is missing with uniform draws over n.

    Static shapes: the kept draws are ranked in a random order and scattered to slots ``0..K-1``; slots past the
    kept ones keep their independent uniform draw (the reference appends those one at a time).
    """
    device = pos.device
    pos = pos.index_select(0, torch.randperm(pos.numel(), generator=generator, device=device))
    keep = pos < n
    rank = torch.cumsum(keep.long(), 0) - 1
    out = torch.randint(0, n, (num + 1,), generator=generator, device=device)  # the last slot is a dump
    out.scatter_(0, torch.where(keep & (rank < num), rank, num), pos)
    return out[:num]


def _naive(n: int, num: int, antithetic: bool, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The reference's fallback ``monte_carlo_sample`` / ``as_monte_carlo_sample`` with ``patch = 16``."""
    runs = n // _NAIVE_PATCH
    if n < _NAIVE_PATCH or runs > num:
        return torch.randint(0, n, (num,), generator=generator, device=device)
    each = num // runs
    k = each // 2 if antithetic else each
    run = torch.arange(runs, device=device).repeat_interleave(k)
    pos = run * _NAIVE_PATCH + torch.randint(0, _NAIVE_PATCH, (run.numel(),), generator=generator, device=device)
    if antithetic:
        pos = torch.cat([pos, (2 * run + 1) * _NAIVE_PATCH - 1 - pos])
    out = torch.randint(0, n, (num,), generator=generator, device=device)  # the top-up
    out[: pos.numel()] = pos
    return out.index_select(0, torch.randperm(num, generator=generator, device=device))
