"""Tests of the reference-code samplers "sg-ref"/"sag-ref" (arco.sampling.reference).

The expected behaviour is re-stated here from the description in arco.sampling.reference's docstring (issue 8,
item 4): the candidate list laid out as a square of side round(sqrt(N)), cut into grid x grid blocks whose last
row/column extend to the edge, ``S * edge**2 // N // grid**2`` draws per block (SAG: half, each with its point
mirror), drop of positions >= N, shuffle, top-up with uniform draws, cut to S; and the fallback to the naive
samplers (runs of 16) when a block holds fewer than two positions. The layout is built by explicit loops and the
expected count of every list position is computed analytically (exact distribution of the number of kept draws
by convolution), independently of the vectorised implementation.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from statistics import NormalDist

import numpy as np
import pytest
import torch

from arco.sampling import REF_STRATEGIES, estimate, group_ids, sample, sample_many, sample_per_class
from arco.sampling.reference import _shuffle_and_top_up, sample_positions


# ------------------------------------------------------------------------------------------- the description
def layout(n: int, grid: int) -> tuple[list[list[int]], int]:
    """Blocks of the ``edge x edge`` square as lists of list positions (row-major), and ``edge``."""
    edge = round(math.sqrt(n))
    side = edge // grid
    spans = [range(i * side, (i + 1) * side if i < grid - 1 else edge) for i in range(grid)]
    return [[r * edge + c for r in rows for c in cols] for rows in spans for cols in spans], edge


def mirror_of(block: list[int]) -> dict[int, int]:
    """``int(2 * mean(block)) - p`` for every p of the block, literally as the reference writes it."""
    centre = int(2 * sum(block) / len(block))
    return {p: centre - p for p in block}


def _power(unit: np.ndarray, k: int) -> np.ndarray:
    out = np.ones(1)
    for _ in range(k):
        out = np.convolve(out, unit)
    return out


def _naive_expected(n: int, s: int, antithetic: bool) -> np.ndarray:
    """Expected count of every position under monte_carlo_sample / as_monte_carlo_sample (patch 16)."""
    if n < 16 or n // 16 > s:
        return np.full(n, s / n)
    runs = n // 16
    drawn = 2 * (s // runs // 2) if antithetic else s // runs  # per run; a primary and its mirror: both uniform
    exp = np.full(n, (s - runs * drawn) / n)  # the top-up
    exp[: 16 * runs] += drawn / 16
    return exp


def expected_counts(n: int, s: int, grid: int, strategy: str) -> np.ndarray:
    """E[number of times list position p is in the output], p in [0, n), for ``s`` draws.

    With K the number of kept block draws, the first min(K, s) of a uniform shuffle keep each kept draw with
    probability min(1, s / K), and (s - K)^+ top-ups hit p with probability 1/n each:
    E[count_p] = E[c_p min(1, s/K)] + E[(s - K)^+] / n, c_p the kept draws at p. Draw units (one draw, or a
    draw and its mirror) are independent, so E[c_p f(K)] = units_b / |b| * sum_{q: unit at q puts a copy on p}
    E[f(x(q) + K')], K' the kept count of all other units and x(q) the copies a unit at q keeps.
    """
    antithetic = strategy == "sag-ref"
    blocks, edge = layout(n, grid)
    if min(len(b) for b in blocks) < 2:
        return _naive_expected(n, s, antithetic)
    per = s * edge**2 // n // grid**2
    units = per // 2 if antithetic else per
    mirrors = [mirror_of(b) for b in blocks]

    def kept(q: int, m: dict[int, int]) -> int:
        return int(q < n) + (int(m[q] < n) if antithetic else 0)

    unit_pmfs = []
    for b, m in zip(blocks, mirrors):
        pmf = np.zeros(3)
        for q in b:
            pmf[kept(q, m)] += 1 / len(b)
        unit_pmfs.append(pmf)
    powers = [_power(u, units) for u in unit_pmfs]
    total = np.ones(1)
    for pw in powers:
        total = np.convolve(total, pw)
    ks = np.arange(total.size)
    exp = np.full(n, float(np.sum(total * np.maximum(s - ks, 0))) / n)  # the top-up, for every position
    for i, (b, m) in enumerate(zip(blocks, mirrors)):
        if units == 0:
            continue
        rest = _power(unit_pmfs[i], units - 1)
        for j, pw in enumerate(powers):
            if j != i:
                rest = np.convolve(rest, pw)
        kr = np.arange(rest.size)
        for p in b:
            if p >= n:
                continue
            sources = [p, m[p]] if antithetic else [p]
            for q in sources:
                x = kept(q, m)
                exp[p] += units / len(b) * float(np.sum(rest * np.minimum(1.0, s / (x + kr))))
    return exp


def candidates_mask(n: int, seed: int = 0) -> torch.Tensor:
    """A (2, 9, 11) bool mask with exactly ``n`` scattered True positions."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(2 * 9 * 11, dtype=torch.bool)
    mask[torch.randperm(mask.numel(), generator=g)[:n]] = True
    return mask.view(2, 9, 11)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- statistics
CASES = [  # (N, S, grid): what the case exercises
    (64, 64, 4),  # perfect square, edge % 4 == 0: no drop, no top-up
    (100, 50, 4),  # perfect square, edge % 4 == 2: larger last blocks; top-up
    (110, 100, 4),  # just above a square: positions 100..109 only by the top-up
    (99, 40, 4),  # just below a square: position 99 of the square dropped
    (91, 120, 4),  # below a square with more block draws (128) than S: drop, cut or top-up
    (50, 40, 3),  # grid 3: blocks of side 2, 2, 3
    (50, 40, 4),  # block side 1: the reference falls back to runs of 16 (48, 49 only by the top-up)
    (20, 30, 4),  # fallback, one run of 16 and no top-up: positions 16..19 never drawn
    (50, 3, 4),  # fallback with as many runs as draws (N // 16 == S): still runs, one draw each
    (12, 10, 4),  # edge 3 < 4, empty blocks: fallback, uniform over N
]


@pytest.mark.parametrize("strategy", REF_STRATEGIES)
@pytest.mark.parametrize(("n", "s", "grid"), CASES)
def test_inclusion_frequencies_match_the_description(n, s, grid, strategy):
    expected = expected_counts(n, s, grid, strategy)
    assert math.isclose(expected.sum(), s, rel_tol=1e-9)  # every call returns exactly s entries
    mask = candidates_mask(n)
    flat = torch.nonzero(mask.reshape(-1)).squeeze(1)
    trials, g = 3000, gen(11)
    pos = torch.searchsorted(flat, torch.stack([sample(mask, s, strategy, grid, g) for _ in range(trials)]))
    pos += torch.arange(trials)[:, None] * n
    counts = torch.bincount(pos.reshape(-1), minlength=trials * n).view(trials, n).double().numpy()
    mean, sd = counts.mean(0), counts.std(0, ddof=1)
    # Per-position z-test with a Bonferroni bound over the n positions: family-wise false alarm 1e-3.
    z = NormalDist().inv_cdf(1 - 1e-3 / (2 * n))  # 3.9 (n = 12) .. 4.3 (n = 110)
    never = expected == 0
    assert np.all(mean[never] == 0), f"drawn although never reachable: {np.nonzero(mean[never])[0]}"
    se = sd / math.sqrt(trials)
    dev = np.abs(mean - expected)
    with np.errstate(divide="ignore", invalid="ignore"):  # se = 0 and dev > 0: |z| = inf, a clear failure
        score = np.where(never | (dev == 0), 0.0, dev / se)
    k = int(np.argmax(score))
    assert score[k] <= z, f"position {k}: mean count {mean[k]:.4f}, expected {expected[k]:.4f}, |z| = {score[k]:.1f}"


def test_expected_counts_of_a_simple_case_by_hand():
    """N = 16, S = 16, grid 2: edge 4, four 2x2 blocks, per = 4, nothing dropped: each position 1 per call."""
    assert np.allclose(expected_counts(16, 16, 2, "sg-ref"), 1.0)
    assert np.allclose(expected_counts(16, 16, 2, "sag-ref"), 1.0)
    # N = 20, S = 30: the fallback's single run of 16 gets all 30 draws.
    assert np.allclose(expected_counts(20, 30, 4, "sg-ref"), [30 / 16] * 16 + [0.0] * 4)


def test_list_blocks_are_not_grid_cells():
    """On a 16 x 64 image of value = column, a list block of the 32 x 32 square holds image rows 4i..4i+3 and
    columns {8j..8j+7} u {32+8j..32+8j+7}: within-block variance 16^2 + 63/12 = 261.25, so with 64 draws
    (4 per block, with replacement) Var = 261.25 / 64 = 4.08. A spatial 4x4 cell (4 rows x 16 columns) has
    within-cell variance 255/12: paper SG gives 21.25/64 * 60/63 = 0.316, 13x less."""
    mask = torch.ones(1, 16, 64, dtype=torch.bool)
    values = torch.arange(64.0).expand(1, 16, 64)
    trials, g = 400, gen(3)
    ref = torch.stack([estimate(values, mask, 64, "sg-ref", 4, g) for _ in range(trials)]).double()
    sg = values.reshape(-1)[sample_many(mask, 64, "sg", trials, 4, g)].double().mean(1)
    se = math.sqrt(2 / (trials - 1))  # relative standard error of a sample variance (normal approximation)
    z = 4.0
    assert abs(ref.var() / 4.082 - 1) < z * se
    assert abs(sg.var() / 0.3163 - 1) < z * se
    assert abs(ref.mean() - 31.5) < z * math.sqrt(4.082 / trials)  # unbiased here: edge**2 == N, equal blocks
    blocks, _ = layout(1024, 4)
    block_of = torch.tensor([next(i for i, b in enumerate(blocks) if p in b) for p in range(1024)])
    # A full 32 x 32 image is its own square: only there are the list blocks the grid cells.
    assert torch.equal(block_of, group_ids((1, 32, 32), 4).reshape(-1))
    assert not torch.equal(block_of, group_ids((1, 16, 64), 4).reshape(-1))


def test_fallback_never_draws_past_the_last_run():
    """20 candidates at grid 4 (block side 1): the reference falls back to runs of 16 and, with S = 30, gives
    the run all 30 draws; a value present only on the last 4 candidates is never seen."""
    mask = torch.zeros(1, 4, 8, dtype=torch.bool)
    mask.view(-1)[:20] = True
    values = torch.zeros(1, 4, 8)
    values.view(-1)[16:20] = 1.0
    for seed in range(5):
        assert estimate(values, mask, 30, "sag-ref", 4, gen(seed)) == 0.0


# ------------------------------------------------------------------------------------------- structure
@pytest.mark.parametrize("strategy", REF_STRATEGIES)
@pytest.mark.parametrize(
    ("mask", "num", "grid"),
    [
        (candidates_mask(150), 64, 4),
        (candidates_mask(150), 37, 3),
        (candidates_mask(91), 120, 4),
        (torch.ones(2, 3, 5, 4, dtype=torch.bool), 50, 2),  # 3D
        (candidates_mask(30), 7, 4),  # fallback
        (candidates_mask(5), 9, 4),  # fallback, uniform
        (candidates_mask(1), 3, 1),
    ],
)
def test_exactly_num_draws_at_candidates(strategy, mask, num, grid):
    idx = sample(mask, num, strategy, grid, gen())
    assert idx.dtype == torch.long and idx.shape == (num,) and idx.device == mask.device
    assert bool(mask.reshape(-1)[idx].all())


@pytest.mark.parametrize(("n", "s", "grid"), [(64, 64, 4), (100, 64, 4), (81, 36, 3)])
def test_blocks_get_equal_draws_and_sag_pairs_mirror_inside_a_block(n, s, grid):
    """When no draw is dropped or topped up (N = edge**2, grid**2 * per == S, per even), every block holds
    exactly ``per`` draws, and under "sag-ref" each block's draws are closed under its point mirror."""
    blocks, edge = layout(n, grid)
    per = s * edge**2 // n // grid**2
    assert edge**2 == n and per % 2 == 0 and per * grid**2 == s
    mask = torch.ones(1, n, dtype=torch.bool).view(1, 1, n)
    for strategy in REF_STRATEGIES:
        for seed in range(3):
            drawn = Counter(sample(mask, s, strategy, grid, gen(seed)).tolist())
            for b in blocks:
                in_block = Counter({p: drawn[p] for p in b if drawn[p]})
                assert sum(in_block.values()) == per
                if strategy == "sag-ref":
                    m = mirror_of(b)
                    assert in_block == Counter({m[p]: c for p, c in in_block.items()})


@pytest.mark.parametrize("strategy", REF_STRATEGIES)
def test_deterministic_under_generator(strategy):
    mask = candidates_mask(150)
    a = sample(mask, 30, strategy, 4, gen(7))
    b = sample(mask, 30, strategy, 4, gen(7))
    c = sample(mask, 30, strategy, 4, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    flat = torch.nonzero(mask.reshape(-1)).squeeze(1)
    assert torch.equal(flat[sample_positions(150, 30, strategy, 4, gen(7))], a)


def test_output_is_shuffled_not_grouped_by_block():
    """The reference shuffles the kept draws: over calls, the first entry falls in every block."""
    first = {sample_positions(64, 64, "sg-ref", 4, gen(seed))[0].item() // 16 for seed in range(100)}
    assert first == {0, 1, 2, 3}  # block rows of the 8 x 8 square: P(one missing) < 4 * 0.75**100


def test_cut_is_a_uniform_subset_and_top_up_comes_last():
    """Step 4 on its own: kept draws shuffled into the first slots, cut uniformly, then uniform top-ups."""
    trials, g = 4000, gen(5)
    # 8 block draws, positions 6 and 7 dropped (n = 6), 4 slots: a uniform 4-subset of 0..5 (p = 2/3 each).
    cut = torch.stack([_shuffle_and_top_up(torch.arange(8), 6, 4, g) for _ in range(trials)])
    assert all(len(set(row)) == 4 and max(row) < 6 for row in cut.tolist())
    freq = torch.bincount(cut.reshape(-1), minlength=6).double() / trials
    z = NormalDist().inv_cdf(1 - 1e-3 / 12)  # 3.9: Bonferroni over 6 positions, family-wise 1e-3
    assert torch.all((freq - 2 / 3).abs() < z * math.sqrt(2 / 9 / trials))
    assert (cut[:, 0] == 5).any() and (cut[:, 3] == 0).any()  # shuffled, not in block order
    # 3 kept of 8, 5 slots: the 3 kept (in random order) first, then 2 uniform draws over [0, 3).
    top = torch.stack([_shuffle_and_top_up(torch.tensor([7, 0, 9, 1, 8, 2, 5, 6]), 3, 5, g) for _ in range(trials)])
    assert all(sorted(row[:3]) == [0, 1, 2] for row in top.tolist())
    freq = torch.bincount(top[:, 3:].reshape(-1), minlength=3).double() / (2 * trials)
    assert torch.all((freq - 1 / 3).abs() < z * math.sqrt(2 / 9 / (2 * trials)))


def test_replace_flag_has_no_effect():
    mask = candidates_mask(150)
    assert torch.equal(sample(mask, 500, "sg-ref", 4, gen(), replace=False), sample(mask, 500, "sg-ref", 4, gen()))
    assert sample(mask, 500, "sg-ref", 4, gen(), replace=True).numel() == 500


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", REF_STRATEGIES)
def test_cuda_device_and_no_sync(strategy):
    g = torch.Generator(device="cuda").manual_seed(0)
    sample_positions(150, 64, strategy, 4, g, "cuda")  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        pos = sample_positions(150, 64, strategy, 4, g, "cuda")
        small = sample_positions(30, 64, strategy, 4, g, "cuda")  # fallback
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert pos.device.type == "cuda" and small.device.type == "cuda"
    mask = candidates_mask(150).cuda()
    idx = sample(mask, 64, strategy, 4, g)
    assert idx.device.type == "cuda" and idx.shape == (64,) and bool(mask.reshape(-1)[idx].all())


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
        assert sample_positions(0, 0, strategy).numel() == 0


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: sample(torch.ones(1, 8, 8, dtype=torch.bool), 4, "sg-ref", grid=(2, 2)), TypeError, "grid"),
        (lambda: sample(torch.ones(1, 8, 8, dtype=torch.bool), 4, "sg-ref", grid=0), ValueError, "grid"),
        (lambda: sample(torch.ones(1, 8, 8), 4, "sg-ref"), TypeError, "bool"),
        (lambda: sample(torch.ones(1, 8, 8, dtype=torch.bool), -1, "sg-ref"), ValueError, "num"),
        (lambda: sample_positions(64, 4, "sg"), ValueError, "'sg-ref', 'sag-ref'"),
        (lambda: sample_positions(0, 4, "sg-ref"), ValueError, "empty list"),
        (lambda: sample_positions(-3, 4, "sg-ref"), ValueError, "num_candidates"),
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
