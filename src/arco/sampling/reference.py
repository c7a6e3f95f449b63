"""Reproduction of the reference code's samplers, for comparison studies only (SPEC §2, last paragraph).

``"sg-ref"`` and ``"sag-ref"`` mimic ``grid_monte_carlo_sample`` in ``code/loss_helper.py`` of
charlesyou999648/ARCO. They are NOT the paper's SG/SAG (Sec. 3.3; :mod:`arco.sampling`): the reference
takes the flat list of the n candidate indices in raster order, keeps the first ``s*s`` of them
(``s = floor(sqrt(n))``), reshapes that list into an ``s x s`` pseudo-square and cuts it into
``grid x grid`` blocks. Every block gets the same number of draws, drawn uniformly with replacement inside
the block. Its "strata" are therefore runs of list positions (rows of the image, roughly), not image
regions, the last ``n - s*s`` candidates are never drawn, and the allocation ignores block sizes.
``"sag-ref"`` draws half of a block's share and pairs each draw with the reversed list position inside the
block (position p <-> ``block_len - 1 - p``), not with a spatial mirror.

Choices where the description leaves room (documented, covered by ``tests/test_sampling_ref.py``):

- Blocks have side ``b = s // grid`` and cover rows/columns ``[i*b, (i+1)*b)`` of the pseudo-square; the
  last ``s % grid`` rows and columns of the square are dropped too. A position inside a block is counted
  row-major over its ``b x b`` entries, so its reversed partner is the block-local point ``(b-1-r, b-1-c)``.
- ``num // grid**2`` draws per block; the remainder ``num % grid**2`` goes one each to that many distinct
  blocks chosen uniformly at random, so the output has exactly ``num`` entries and every block's expected
  share is equal.
- With ``n_m`` draws in a block, ``"sag-ref"`` draws ``ceil(n_m / 2)`` primaries and pairs the first
  ``floor(n_m / 2)`` of them (the partner of an odd block's centre is the centre itself).
- Fewer than ``grid**2`` candidates (``b == 0``, empty blocks) raises ``ValueError``: the reference code
  fails there too (its 3D twin silently falls back to NS, which STYLE §5 forbids). An empty mask warns and
  returns no indices, like :func:`arco.sampling.sample`.
"""

from __future__ import annotations

import math
import warnings

import torch

from arco.sampling._validate import check_num as _check_num
from arco.sampling._validate import check_ref as _check_ref
from arco.sampling._validate import check_spatial as _check_spatial

__all__ = ["sample_ref", "sample_ref_from_candidates", "ref_block_ids"]


def _side(n: int, grid: int, where: str) -> tuple[int, int]:
    """Pseudo-square side ``s`` and block side ``b``; raises when a block would be empty."""
    s = math.isqrt(n)
    if s < grid:
        raise ValueError(
            f"{where}: the reference sampler needs at least grid**2 = {grid * grid} candidates to fill its "
            f"{grid}x{grid} list blocks, got {n}; use a smaller grid or the paper's 'sg'/'sag'"
        )
    return s, s // grid


def ref_block_ids(num_candidates: int, grid: int = 4, device: torch.device | str | None = None) -> torch.Tensor:
    """List block of every candidate list position under the reference layout (tests, diagnostics).

    Args:
        num_candidates: n, the number of candidates (length of the flat candidate list).
        grid: blocks per side of the pseudo-square.
        device: output device.

    Returns:
        int64 ``(n,)``: block id ``i * grid + j`` (row i, column j of blocks) of each list position, or -1 for
        positions the reference never draws (beyond ``s*s`` or in the dropped last rows/columns).

    Raises:
        ValueError: fewer than ``grid**2`` candidates.

    Example:
        >>> ref_block_ids(20, grid=2).tolist()
        [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3, -1, -1, -1, -1]
    """
    where = "ref_block_ids()"
    _check_num(num_candidates, "num_candidates", where)
    _check_ref("sg-ref", grid, where)
    s, b = _side(num_candidates, grid, where)
    pos = torch.arange(num_candidates, device=device)
    row, col = torch.div(pos, s, rounding_mode="floor"), pos % s
    bi, bj = torch.div(row, b, rounding_mode="floor"), torch.div(col, b, rounding_mode="floor")
    inside = (pos < s * s) & (bi < grid) & (bj < grid)
    return torch.where(inside, bi * grid + bj, -1)


def sample_ref_from_candidates(
    candidates: torch.Tensor,
    num: int,
    strategy: str,
    grid: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The reference code's grid Monte-Carlo sampler on a flat candidate list (comparison studies only).

    Args:
        candidates: int64 ``(n,)`` candidate indices in the reference's list order (raster order for a mask,
            ``torch.nonzero(mask.reshape(-1))``); any device.
        num: number of draws; returned exactly, with replacement.
        strategy: ``"sg-ref"`` (equal draws per list block) or ``"sag-ref"`` (half of them, each paired
            with the reversed position inside its block).
        grid: blocks per side of the pseudo-square (4 in the reference code).
        generator: ``torch.Generator`` on the candidates' device.

    Returns:
        int64 ``(num,)`` entries of ``candidates`` on its device, grouped by block (block 0 first); inside a
        block the primaries come first, then (``"sag-ref"``) their partners in the same order.

    Raises:
        ValueError: bad ``strategy``/``num``/``grid``, or fewer than ``grid**2`` candidates.
        TypeError: ``candidates`` is not a 1-D int64 tensor or ``grid`` not an int.
    """
    where = "sample_ref_from_candidates()"
    if not isinstance(candidates, torch.Tensor) or candidates.dtype != torch.long or candidates.dim() != 1:
        got = f"{getattr(candidates, 'dtype', type(candidates).__name__)}"
        raise TypeError(f"{where}: candidates must be a 1-D int64 tensor, got {got}")
    _check_num(num, "num", where)
    _check_ref(strategy, grid, where)
    return _draw_ref(candidates, num, strategy == "sag-ref", grid, generator, where)


def _draw_ref(
    candidates: torch.Tensor,
    num: int,
    antithetic: bool,
    grid: int,
    generator: torch.Generator | None,
    where: str,
) -> torch.Tensor:
    device, blocks = candidates.device, grid * grid
    s, b = _side(candidates.numel(), grid, where)
    # Equal allocation; the remainder goes to distinct random blocks (the reference leaves it out).
    alloc = torch.full((blocks,), num // blocks, dtype=torch.long, device=device)
    extra = torch.randperm(blocks, generator=generator, device=device)[: num % blocks]
    alloc[extra] += 1
    ends = torch.cumsum(alloc, 0)
    slot = torch.arange(num, device=device)
    block = torch.searchsorted(ends, slot, right=True)
    length = b * b
    within = torch.randint(0, length, (num,), generator=generator, device=device)
    if antithetic:
        rank = slot - (ends - alloc).index_select(0, block)
        half = ((alloc + 1) // 2).index_select(0, block)
        partner = length - 1 - within.index_select(0, (slot - half).clamp(min=0))
        within = torch.where(rank >= half, partner, within)
    bi, bj = torch.div(block, grid, rounding_mode="floor"), block % grid
    r, c = torch.div(within, b, rounding_mode="floor"), within % b
    return candidates.index_select(0, (bi * b + r) * s + bj * b + c)


def sample_ref(
    mask: torch.Tensor,
    num: int,
    strategy: str,
    grid: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reference-code sampler on a mask: what :func:`arco.sampling.sample` runs for the -ref strategies.

    The candidates are ``torch.nonzero(mask.reshape(-1))`` (raster order over the whole batch, as the
    reference flattens them); see :func:`sample_ref_from_candidates` and the module docstring for the layout.

    Args:
        mask: bool ``(B, H, W)`` or ``(B, D, H, W)`` on any device.
        num: number of draws; always exactly ``num``, with replacement (``sample``'s ``replace`` is ignored).
        strategy, grid, generator: as :func:`sample_ref_from_candidates`.

    Returns:
        int64 ``(num,)`` flat indices into ``mask.reshape(-1)`` on ``mask.device``, all at True positions;
        empty, with a warning, for an empty mask.

    Raises:
        ValueError: bad ``strategy``/``num``/``grid``, or between 1 and ``grid**2 - 1`` candidates.
        TypeError: ``mask`` is not a bool tensor or ``grid`` not an int.

    Example:
        >>> mask = torch.ones(1, 8, 8, dtype=torch.bool)
        >>> idx = sample_ref(mask, 32, "sag-ref", generator=torch.Generator().manual_seed(0))
        >>> idx.shape, bool(mask.reshape(-1)[idx].all())
        (torch.Size([32]), True)
    """
    where = "sample()"
    _check_num(num, "num", where)
    _check_spatial(mask, "mask", (torch.bool,), "bool", where)
    _check_ref(strategy, grid, where)
    flat = torch.nonzero(mask.reshape(-1)).squeeze(1)  # the one sync: the list length sets the layout
    if flat.numel() == 0:
        warnings.warn(f"{where}: the mask has no candidates; returning no indices", stacklevel=3)
    if flat.numel() == 0 or num == 0:
        return flat[:0]
    return _draw_ref(flat, num, strategy == "sag-ref", grid, generator, where)
