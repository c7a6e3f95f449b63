"""NS / SG / SAG on a memory bank (arco.sampling.bank): contract, unbiasedness and variance, with fixed generators.

Every tolerance is z standard errors of the Monte-Carlo estimate; z is written next to each check.
"""

from __future__ import annotations

import math

import pytest
import torch

from arco.sampling.bank import estimate_bank, sample_bank

T = 4_000  # Monte-Carlo trials per check


def values(k: int, seed: int = 0) -> torch.Tensor:
    """Per-key values with a strong trend along the enqueue order (keys of one step resemble each other)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 1, k, dtype=torch.float64)
    return (3 * x**2 + 0.2 * torch.randn(k, generator=g, dtype=torch.float64))[None]


def trials(v: torch.Tensor, num: int, strategy: str, blocks: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([v.shape[1]])
    return torch.stack([estimate_bank(v, size, num, strategy, blocks, g)[0] for _ in range(T)])


@pytest.mark.parametrize("strategy", ["ns", "sg", "sag"])
def test_contract(strategy):
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([1000, 37, 0, 5, 1])
    pos = sample_bank(sizes, 256, strategy, generator=g)
    assert pos.shape == (5, 256) and pos.dtype == torch.long
    for c, n in enumerate(sizes.tolist()):
        assert int(pos[c].min()) >= 0 and int(pos[c].max()) <= max(n - 1, 0)
    again = sample_bank(sizes, 256, strategy, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pos, again)
    with pytest.raises(ValueError, match="strategy"):
        sample_bank(sizes, 4, "sg-ref")
    with pytest.raises(ValueError, match="blocks"):
        sample_bank(sizes, 4, "sg", blocks=0)


def test_sg_allocates_draws_in_proportion_to_the_blocks():
    # 100 keys in 8 blocks of 12-13 keys, 64 draws: every block gets floor or ceil of its share, always.
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        pos = sample_bank(torch.tensor([100]), 64, "sg", blocks=8, generator=g, shuffle=False)[0]
        edges = torch.arange(9) * 100 // 8
        counts = torch.bincount(torch.searchsorted(edges, pos, right=True) - 1, minlength=8)
        share = 64 * (edges[1:] - edges[:-1]) / 100
        assert bool(((counts >= share.floor()) & (counts <= share.ceil())).all())


def test_sag_draws_mirrored_pairs_inside_blocks():
    pos = sample_bank(torch.tensor([40]), 8, "sag", blocks=4, generator=torch.Generator().manual_seed(2), shuffle=False)
    pos = pos[0].tolist()
    # 4 blocks of 10 keys, 2 draws each: a draw p and its mirror 2 * b0 + 9 - p
    for b in range(4):
        p, q = pos[2 * b], pos[2 * b + 1]
        assert 10 * b <= p < 10 * (b + 1) and q == 20 * b + 9 - p
    sg = sample_bank(torch.tensor([40]), 8, "sg", blocks=4, generator=torch.Generator().manual_seed(2), shuffle=False)
    assert sg[0].tolist() != pos  # SAG is not SG


@pytest.mark.parametrize("strategy", ["ns", "sg", "sag"])
def test_unbiased(strategy):
    v = values(301)
    est = trials(v, 64, strategy)
    z = 4.0
    assert abs(float(est.mean()) - float(v.mean())) <= z * float(est.std()) / math.sqrt(T)


def test_variance_sg_below_ns_and_sag_within_twice_sg():
    v = values(301)
    var = {s: float(trials(v, 64, s).var()) for s in ("ns", "sg", "sag")}
    # The sample variance of T draws has relative standard error about sqrt(2 / T) (2.2 % at T = 4000).
    rel = math.sqrt(2 / T)
    z = 4.0
    assert var["sg"] < var["ns"] * (1 - z * rel)  # a strong trend along the list: stratifying by blocks pays
    assert var["sag"] <= 2 * var["sg"] * (1 + z * rel)  # Lemma 3.1
    # with-replacement Thm 3.2: Var_NS - Var_SG ~= (1/n) sum_m w_m (mu_m - mu)^2 (rounding adds a little to SG)
    edges = torch.arange(17) * 301 // 16
    mu = v.mean()
    between = sum((edges[m + 1] - edges[m]) / 301 * (v[0, edges[m] : edges[m + 1]].mean() - mu) ** 2 for m in range(16))
    gap = var["ns"] - var["sg"]
    assert gap == pytest.approx(float(between) / 64, rel=0.25)


def test_sag_beats_sg_on_a_monotone_list():
    # Mirrored pairs cancel a linear trend inside each block (antithetic variates).
    v = torch.linspace(0, 1, 320, dtype=torch.float64)[None]
    assert float(trials(v, 32, "sag").var()) < 0.5 * float(trials(v, 32, "sg").var())
