"""Tests of arco.sampling.reference, the reproduction of the reference code's list-block sampler ("sg-ref",
"sag-ref"), against a slow per-block loop kept here that slices the pseudo-square explicitly."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from arco.sampling import REF_STRATEGIES, estimate, group_ids, sample, sample_many, sample_per_class
from arco.sampling.reference import ref_block_ids, sample_ref, sample_ref_from_candidates


# ------------------------------------------------------------------------------------------- slow reference
def slow_blocks(candidates: list[int], grid: int) -> list[list[int]]:
    """Blocks of the reference layout as lists (row-major inside a block), by explicit loops and slicing."""
    s = math.isqrt(len(candidates))
    b = s // grid
    square = [candidates[r * s : (r + 1) * s] for r in range(s)]
    blocks = []
    for i in range(grid):
        for j in range(grid):
            blocks.append([x for row in square[i * b : (i + 1) * b] for x in row[j * b : (j + 1) * b]])
    return blocks


def split_by_block(idx: list[int], blocks: list[list[int]]) -> list[list[int]]:
    """Cut the output into its per-block runs, checking that the runs are contiguous and in block order."""
    where = {x: m for m, blk in enumerate(blocks) for x in blk}
    owner = [where[x] for x in idx]  # KeyError: an index outside every block
    assert owner == sorted(owner), "draws are not grouped by block"
    return [[x for x, o in zip(idx, owner) if o == m] for m in range(len(blocks))]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def irregular_mask() -> torch.Tensor:
    """Two images, a blob and a stripe: 150 candidates (s = 12, 6 of the list never drawn at grid 4 or 3)."""
    mask = torch.zeros(2, 12, 10, dtype=torch.bool)
    mask[0, 2:9, 1:9] = True  # 56
    mask[1, 0:12, 3:10] = True  # 84
    mask[1, 5, 0:3] = True  # 3
    mask[0, 11, 0:7] = True  # 7
    return mask


# ------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("strategy", REF_STRATEGIES)
@pytest.mark.parametrize(
    ("mask", "num", "grid"),
    [
        (irregular_mask(), 64, 4),
        (irregular_mask(), 37, 3),
        (torch.ones(1, 4, 4, dtype=torch.bool), 40, 4),  # 16 candidates, one per block
        (torch.ones(2, 3, 5, 4, dtype=torch.bool), 50, 2),  # 3D
        (irregular_mask(), 5, 4),  # fewer draws than blocks
    ],
)
def test_draws_are_candidates_in_list_blocks(strategy, mask, num, grid):
    idx = sample(mask, num, strategy, grid, gen())
    assert idx.dtype == torch.long and idx.shape == (num,) and idx.device == mask.device
    assert bool(mask.reshape(-1)[idx].all())
    blocks = slow_blocks(torch.nonzero(mask.reshape(-1)).squeeze(1).tolist(), grid)
    runs = split_by_block(idx.tolist(), blocks)
    sizes = sorted(len(r) for r in runs)
    assert sum(sizes) == num and sizes[0] == num // grid**2 and sizes[-1] == -(-num // grid**2)


@pytest.mark.parametrize("num", [64, 70])
def test_equal_allocation_and_random_remainder(num):
    mask = irregular_mask()
    flat = torch.nonzero(mask.reshape(-1)).squeeze(1)
    bid = ref_block_ids(flat.numel(), 4)
    extra_blocks = set()
    for seed in range(20):
        idx = sample(mask, num, "sg-ref", 4, gen(seed))
        counts = torch.bincount(bid[torch.searchsorted(flat, idx)], minlength=16)
        assert counts.sum() == num and set(counts.tolist()) <= {num // 16, num // 16 + 1}
        extra_blocks |= set(torch.nonzero(counts > num // 16).squeeze(1).tolist())
    assert extra_blocks == (set() if num % 16 == 0 else set(range(16)))  # 20 x 6 extras hit all 16 blocks


def test_block_ids_match_slow_slicing():
    for n, grid in [(16, 4), (20, 2), (150, 4), (150, 3), (1000, 5)]:
        cand = list(range(n))
        want = [-1] * n
        for m, blk in enumerate(slow_blocks(cand, grid)):
            for x in blk:
                want[x] = m
        assert ref_block_ids(n, grid).tolist() == want


def test_sag_ref_partners_are_reversed_list_positions():
    mask = irregular_mask()
    blocks = slow_blocks(torch.nonzero(mask.reshape(-1)).squeeze(1).tolist(), 4)
    for num in (64, 90):  # 4 per block (even), 5 or 6 per block (odd: trimmed)
        idx = sample(mask, num, "sag-ref", 4, gen(1))
        for blk, run in zip(blocks, split_by_block(idx.tolist(), blocks)):
            half = (len(run) + 1) // 2
            for k in range(len(run) - half):
                assert run[half + k] == blk[len(blk) - 1 - blk.index(run[k])]


def test_sg_ref_draws_with_replacement_and_skips_the_list_tail():
    mask = torch.ones(1, 10, 10, dtype=torch.bool)
    mask[0, 9, 5:] = False  # 95 candidates: s = 9, b = 2 at grid 4, list positions >= 81 and row/col 8 unused
    flat = torch.nonzero(mask.reshape(-1)).squeeze(1)
    unused = set(flat[ref_block_ids(95, 4) < 0].tolist())
    idx = sample(mask, 800, "sg-ref", 4, gen())
    assert idx.unique().numel() < 800  # 64 usable positions: repeats are certain
    assert not unused & set(idx.tolist())
    assert set(idx.tolist()) == set(flat.tolist()) - unused  # 50 draws per 4-entry block: P(miss) < 1e-4


@pytest.mark.parametrize("strategy", REF_STRATEGIES)
def test_deterministic_under_generator(strategy):
    mask = irregular_mask()
    a = sample(mask, 30, strategy, 4, gen(7))
    b = sample(mask, 30, strategy, 4, gen(7))
    c = sample(mask, 30, strategy, 4, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    flat = torch.nonzero(mask.reshape(-1)).squeeze(1)
    assert torch.equal(sample_ref_from_candidates(flat, 30, strategy, 4, gen(7)), a)
    assert torch.equal(sample_ref(mask, 30, strategy, 4, gen(7)), a)


def test_replace_flag_has_no_effect():
    mask = irregular_mask()
    assert torch.equal(sample(mask, 500, "sg-ref", 4, gen(), replace=False), sample(mask, 500, "sg-ref", 4, gen()))
    assert sample(mask, 500, "sg-ref", 4, gen(), replace=True).numel() == 500


# ------------------------------------------------------------------------------------------- statistics
def test_list_blocks_are_not_grid_cells():
    """On a 16 x 64 image of value = column, a list block of the 32 x 32 pseudo-square holds image rows
    4i..4i+3 and columns {8j..8j+7} u {32+8j..32+8j+7}: within-block variance 16^2 + 63/12 = 261.25, so
    with 64 draws (4 per block, with replacement) Var = 261.25 / 64 = 4.08. A spatial 4x4 cell (4 rows x
    16 columns) has within-cell variance 255/12: paper SG gives 21.25/64 * 60/63 = 0.316, 13x less."""
    mask = torch.ones(1, 16, 64, dtype=torch.bool)
    values = torch.arange(64.0).expand(1, 16, 64)
    trials, g = 400, gen(3)
    ref = torch.stack([estimate(values, mask, 64, "sg-ref", 4, g) for _ in range(trials)]).double()
    sg = values.reshape(-1)[sample_many(mask, 64, "sg", trials, 4, g)].double().mean(1)
    se = math.sqrt(2 / (trials - 1))  # relative standard error of a sample variance (normal approximation)
    z = 4.0
    assert abs(ref.var() / 4.082 - 1) < z * se
    assert abs(sg.var() / 0.3163 - 1) < z * se
    assert abs(ref.mean() - 31.5) < z * math.sqrt(4.082 / trials)  # unbiased here: s*s == n, blocks equal
    # A full 32 x 32 image is its own pseudo-square: only there are the list blocks the grid cells.
    assert torch.equal(ref_block_ids(1024, 4), group_ids((1, 32, 32), 4).reshape(-1))
    assert not torch.equal(ref_block_ids(1024, 4), group_ids((1, 16, 64), 4).reshape(-1))


def test_dropped_tail_biases_the_estimate():
    """Unused list positions are never drawn: with value 1 exactly there, every estimate is 0."""
    # n = 100: the pseudo-square is the image, but grid 3 (b = 3) drops its row 9 and column 9
    mask = torch.ones(1, 10, 10, dtype=torch.bool)
    values = torch.zeros(1, 10, 10)
    values[0, 9, :] = 1.0
    values[0, :, 9] = 1.0
    for seed in range(5):
        assert estimate(values, mask, 90, "sag-ref", 3, gen(seed)) == 0.0


# ------------------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("strategy", REF_STRATEGIES)
def test_empty_mask_warns_and_returns_empty(strategy):
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.warns(UserWarning, match="no candidates"):
        assert sample(mask, 10, strategy).numel() == 0
    with pytest.warns(UserWarning, match="no candidates"):
        assert torch.isnan(estimate(torch.rand(2, 8, 8), mask, 10, strategy))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sample(torch.ones(1, 4, 4, dtype=torch.bool), 0, strategy).numel() == 0


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda: sample(torch.ones(1, 3, 5, dtype=torch.bool), 4, "sg-ref"),
            ValueError,
            r"at least grid\*\*2 = 16",
        ),
        (lambda: sample(torch.ones(1, 2, 2, dtype=torch.bool), 4, "sag-ref", grid=3), ValueError, "got 4"),
        (lambda: sample(torch.ones(1, 8, 8, dtype=torch.bool), 4, "sg-ref", grid=(2, 2)), TypeError, "grid"),
        (lambda: sample(torch.ones(1, 8, 8, dtype=torch.bool), 4, "sg-ref", grid=0), ValueError, "grid"),
        (lambda: sample(torch.ones(1, 8, 8), 4, "sg-ref"), TypeError, "bool"),
        (lambda: sample(torch.ones(1, 8, 8, dtype=torch.bool), -1, "sg-ref"), ValueError, "num"),
        (
            lambda: sample_ref(torch.ones(1, 8, 8, dtype=torch.bool), 4, "sg"),
            ValueError,
            "'sg-ref', 'sag-ref'",
        ),
        (lambda: sample_ref_from_candidates(torch.arange(20.0), 4, "sg-ref"), TypeError, "int64"),
        (
            lambda: sample_per_class(torch.zeros(1, 8, 8, dtype=torch.long), 2, 4, "sg-ref"),
            ValueError,
            r"sample_per_class\(\): strategy 'sg-ref'.*only available in sample\(\) and estimate\(\)",
        ),
        (lambda: sample_many(torch.ones(1, 8, 8, dtype=torch.bool), 4, "sag-ref", 3), ValueError, "sag-ref"),
    ],
)
def test_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
