"""NS / SG / SAG on a memory bank: where the reference code's sampler also acts on the negatives.

A bank holds keys in *enqueue order* (oldest first). Its positions have no spatial meaning, so the strata are what
the reference code stratifies (``grid_monte_carlo_sample`` over ``len(bank)`` list positions): contiguous runs of
the enqueue order. Keys enqueued together come from the same step, and within a step from the same image and
nearby rows (raster order), so a block of the list is a group of keys of similar age and origin.

For a bank of ``K`` keys, cut into ``G`` blocks ``[m K // G, (m + 1) K // G)`` (sizes differ by at most one):

- **NS**: ``num`` positions uniform on ``[0, K)``, with replacement (the reference: ``torch.randint``).
- **SG**: block m gets ``n_m`` draws, ``n_m`` proportional to its size with randomised systematic rounding
  (:func:`arco.sampling._strata.allocate`, ``sum n_m = num`` exactly, ``E[n_m] = num |m| / K``), each uniform in
  the block with replacement. Every draw then has the marginal ``1 / K`` and the sample mean is unbiased; its
  variance is the within-block part only (Thm 3.2, with-replacement form).
- **SAG**: as SG, but the second half of each block's draws are the mirrors ``b0 + b1 - p`` of the first half
  through the block's centre (the reference's ``center - index``); an odd ``n_m`` keeps one unpaired draw. Mirrors
  of uniform draws are uniform, so SAG is unbiased here too (a bank has no region outside which a mirror could
  fall, unlike the pixel version).

The reference instead cuts the list, laid out as a square, into 4 x 4 blocks with *equal* draws per block (biased
when blocks differ in size) and falls back to uniform draws on failure; that form is not reproduced here.
The draws come out grouped by block; :func:`sample_bank` shuffles them (as the reference does) so that the
``num_queries x num_negatives`` reshape gives every query a mixture of blocks.
"""

from __future__ import annotations

import torch

from arco.sampling._strata import allocate
from arco.sampling._validate import STRATEGIES, check_num, check_strategy

__all__ = ["sample_bank", "estimate_bank"]


def _blocks(sizes: torch.Tensor, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start, count)`` of each block, ``(C, G)`` int64."""
    m = torch.arange(blocks + 1, device=sizes.device)
    edges = (m[None] * sizes[:, None]) // blocks
    return edges[:, :-1], edges[:, 1:] - edges[:, :-1]


def sample_bank(
    sizes: torch.Tensor,
    num: int,
    strategy: str,
    blocks: int = 16,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
) -> torch.Tensor:
    """Draw ``num`` positions from each of ``C`` banks with NS, SG or SAG over enqueue-order blocks.

    Args:
        sizes: ``(C,)`` int64, the number of keys in each bank (positions ``0 .. sizes[c]-1``, oldest first).
        num: draws per bank, with replacement (banks usually hold fewer keys than ``queries x negatives``).
        strategy: ``"ns"``, ``"sg"`` or ``"sag"``.
        blocks: strata per bank (``G``; the reference: a 4 x 4 grid = 16).
        generator: for reproducible draws, on ``sizes.device``.
        shuffle: randomly permute each bank's draws (SG/SAG come out grouped by block otherwise).

    Returns:
        ``(C, num)`` int64 positions; a bank of size 0 gets zeros (the caller masks it). No host sync.

    Example:
        >>> pos = sample_bank(torch.tensor([100, 7]), 64, "sg", generator=torch.Generator().manual_seed(0))
        >>> pos.shape, bool((pos[0] < 100).all() and (pos[1] < 7).all())
        (torch.Size([2, 64]), True)
    """
    where = "sample_bank()"
    check_num(num, "num", where)
    check_strategy(strategy, where)
    if strategy not in STRATEGIES:
        raise ValueError(f"{where}: strategy must be one of {STRATEGIES} on a bank, got {strategy!r}")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"{where}: blocks must be a positive integer, got {blocks!r}")
    sizes = sizes.long()
    c, device = sizes.shape[0], sizes.device
    u = torch.rand(c, num, generator=generator, device=device, dtype=torch.float64)
    if strategy == "ns":
        pos = (u * sizes[:, None]).long()
    else:
        start, count = _blocks(sizes, blocks)
        alloc = allocate(count, num, generator, cap=False)  # (C, G), rows sum to num (0 for empty banks)
        ends = torch.cumsum(alloc, 1)
        slot = torch.arange(num, device=device).expand(c, num).contiguous()
        block = torch.searchsorted(ends, slot, right=True).clamp_max(blocks - 1)  # (C, num)
        b0, n_b = start.gather(1, block), count.gather(1, block)
        first = (ends - alloc).gather(1, block)
        pos = b0 + (u * n_b).long()
        if strategy == "sag":
            rank = slot - first
            half = ((alloc + 1) // 2).gather(1, block)
            partner = (first + rank - half).clamp_min(0)
            mirrored = 2 * b0 + n_b - 1 - pos.gather(1, partner)
            pos = torch.where(rank >= half, mirrored, pos)
    pos = torch.minimum(pos.clamp_min(0), (sizes[:, None] - 1).clamp_min(0))
    if shuffle and strategy != "ns":
        order = torch.rand(c, num, generator=generator, device=device).argsort(dim=1)
        pos = pos.gather(1, order)
    return pos


def estimate_bank(
    values: torch.Tensor,
    sizes: torch.Tensor,
    num: int,
    strategy: str,
    blocks: int = 16,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The sampling estimate of each bank's mean value: ``values (C, K)`` (entry ``[c, k]`` for position ``k``
    of bank ``c``), the mean of ``values`` at :func:`sample_bank`'s draws, ``(C,)``."""
    pos = sample_bank(sizes, num, strategy, blocks, generator, shuffle=False)
    return values.gather(1, pos).mean(1)
