"""Statistical tests of the samplers (docs/samplers.md; paper Thm 3.2 and Lemma 3.1), with fixed generators.

Every tolerance is z standard errors of the Monte-Carlo estimate; z is written next to each check.
"""

from __future__ import annotations

import math

import torch

from arco.sampling import group_ids, sample, sample_many
from arco.variance import theory

T = 8_000  # Monte-Carlo trials per check (tolerances below scale with 1/sqrt(T))


def structured(shape, seed=0):
    """A value map with strong between-cell structure plus noise (what stratification exploits)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape[1:]], indexing="ij")
    v = sum((i + 1) * c for i, c in enumerate(coords)) + (coords[0] ** 2 > 0.3).double() * 2
    return (v[None].expand(shape) + 0.3 * torch.randn(shape, generator=g)).double().contiguous()


def estimates(values, mask, num, strategy, grid, trials=T, seed=0):
    idx = sample_many(mask, num, strategy, trials, grid, torch.Generator().manual_seed(seed))
    return values.reshape(-1)[idx].mean(1)


def largest_remainder(counts, num):
    """A fixed rounding rule (NOT arco's): floor of the shares, the extra draws to the largest remainders."""
    share = counts * num / counts.sum()
    n = share.floor()
    extra = int(num - n.sum())
    n[torch.argsort(share - n, descending=True)[:extra]] += 1
    return n


def irregular():
    mask = torch.rand(1, 10, 10, generator=torch.Generator().manual_seed(3)) < 0.6
    return mask, structured((1, 10, 10))


# ------------------------------------------------------------------------------------------- unbiasedness
def test_every_candidate_has_inclusion_probability_num_over_p():
    mask, _ = irregular()
    num, p = 7, int(mask.sum())
    idx = sample_many(mask, num, "sg", T, 3, torch.Generator().manual_seed(0))
    freq = torch.bincount(idx.reshape(-1), minlength=mask.numel())[mask.reshape(-1)] / T
    pi = num / p
    sd = math.sqrt(pi * (1 - pi) / T)
    z = 4.5  # Bonferroni over ~60 candidates: P(any false alarm) < 1e-3
    assert (freq - pi).abs().max() <= z * sd
    # A fixed rounding rule gives some candidates a clearly different inclusion probability (n_m / N_m).
    gid = group_ids(mask.shape, 3)[mask]
    counts = torch.bincount(gid).double()
    n_lr = largest_remainder(counts[counts > 0], num)
    assert ((n_lr / counts[counts > 0]) - pi).abs().max() > 10 * sd


def test_sg_mean_is_unbiased_but_fixed_rounding_is_not():
    mask, values = irregular()
    num = 7
    est = estimates(values, mask, num, "sg", 3)
    mu = values[mask].mean()
    z = 4.0
    assert abs(est.mean() - mu) <= z * est.std() / math.sqrt(T)
    # Exact expectation of the plain mean under largest-remainder allocation: sum_m n_m mu_m / n != mu.
    gid = group_ids(mask.shape, 3)[mask]
    counts = torch.bincount(gid).double()
    mu_m = torch.bincount(gid, weights=values[mask]) / counts.clamp(min=1)
    keep = counts > 0
    biased = (largest_remainder(counts[keep], num) * mu_m[keep]).sum() / num
    assert abs(biased - mu) > 5 * z * est.std() / math.sqrt(T)


def test_sg_and_sag_unbiased_in_3d_on_a_full_mask():
    mask = torch.ones(1, 6, 4, 6, dtype=torch.bool)  # cells 3x2x3 (grid 2): odd sizes, centre pixels too
    values = structured(mask.shape)
    mu = values.mean()
    z = 4.0
    for strategy in ("sg", "sag"):
        est = estimates(values, mask, 11, strategy, 2, trials=4_000)
        assert abs(est.mean() - mu) <= z * est.std() / math.sqrt(4_000), strategy


def test_sag_is_biased_where_mirrors_leave_the_mask_as_specified():
    # SAG replaces a mirror outside the candidates by a fresh draw: candidates whose mirror is outside the
    # mask are then drawn less often than paired ones, so SAG's plain mean is biased on asymmetric regions.
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, :4, :4] = True
    mask[0, 0, 2:4] = False  # breaks the symmetry of one cell
    values = torch.zeros(1, 8, 8, dtype=torch.float64)
    values[0, 3, 0:2] = 1.0  # exactly the pixels whose mirrors were removed
    est = estimates(values, mask, 4, "sag", 2)
    mu = values[mask].mean()
    z = 4.0
    assert est.mean() < mu - z * est.std() / math.sqrt(T)


# ------------------------------------------------------------------------------------------- variance facts
def test_variance_gap_matches_theorem_3_2_without_replacement():
    mask = torch.ones(1, 12, 12, dtype=torch.bool)  # grid 3: 9 groups of 16; n = 18 -> n_m = 2 exactly
    values = structured(mask.shape)
    pred = theory(values, mask, 18, 3)
    var_ns = estimates(values, mask, 18, "ns", 3).var()
    var_sg = estimates(values, mask, 18, "sg", 3, seed=1).var()
    assert var_sg < var_ns
    # se of a sample variance of near-normal estimates: var * sqrt(2 / (T - 1)); z = 4.
    z, rel = 4.0, math.sqrt(2 / (T - 1))
    assert abs(var_ns - pred["var_ns_pred_wor"]) <= z * rel * pred["var_ns_pred_wor"]
    assert abs(var_sg - pred["var_sg_pred_wor"]) <= z * rel * pred["var_sg_pred_wor"]
    se_gap = rel * math.hypot(pred["var_ns_pred_wor"], pred["var_sg_pred_wor"])
    assert abs((var_ns - var_sg) - pred["gap_pred_wor"]) <= z * se_gap
    # Thm 3.2's with-replacement gap differs from the exact one only by finite-population factors here.
    fpc = 1 - 18 / 144
    assert abs(pred["gap_pred_wor"] - fpc * pred["gap_pred_wr"]) <= 0.1 * pred["gap_pred_wr"]


def test_variance_gap_matches_theorem_3_2_with_replacement():
    mask = torch.ones(1, 12, 12, dtype=torch.bool)
    values = structured(mask.shape)
    trials, num = 1000, 18
    g = torch.Generator().manual_seed(0)
    flat = values.reshape(-1)
    est = {
        s: torch.stack([flat[sample(mask, num, s, 3, g, replace=True)].mean() for _ in range(trials)])
        for s in ("ns", "sg")
    }
    h = values[mask]
    gid = group_ids(mask.shape, 3)[mask]
    w = torch.bincount(gid).double() / h.numel()
    mu_m = torch.bincount(gid, weights=h) / torch.bincount(gid)
    var_m = torch.bincount(gid, weights=(h - mu_m[gid]) ** 2) / torch.bincount(gid)
    var_ns, var_sg = h.var(unbiased=False) / num, (w * var_m).sum() / num  # exact, integer shares
    gap = (w * (mu_m - h.mean()) ** 2).sum() / num  # Thm 3.2
    assert torch.isclose(var_ns - var_sg, gap)
    z, rel = 4.0, math.sqrt(2 / (trials - 1))
    measured = est["ns"].var() - est["sg"].var()
    assert abs(measured - gap) <= z * rel * math.hypot(var_ns, var_sg)


def test_sag_variance_at_most_twice_sg_and_nearly_tight_for_mirror_symmetric_values():
    mask = torch.ones(1, 8, 8, dtype=torch.bool)  # grid 2: cells 4x4, n = 8 -> n_m = 2 (one mirrored pair)
    z, rel = 4.0, math.sqrt(2 / (T - 1))
    smooth = structured(mask.shape)
    v_sg = estimates(smooth, mask, 8, "sg", 2).var()
    v_sag = estimates(smooth, mask, 8, "sag", 2, seed=1).var()
    assert v_sag <= 2 * v_sg * (1 + z * rel)
    # h(p) = h(p') for every mirror pair: a pair carries one value twice, the worst case of Lemma 3.1. Its
    # factor 2 is for draws with replacement; without replacement SG also gains the finite-population factor
    # (N_m - n_m) / (N_m - 1), so here Var_SAG / Var_SG = 2 (N_m - 1) / (N_m - n_m) = 2 * 15 / 14 exactly.
    v = torch.randn(1, 2, 4, 2, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sym = (v + v.flip(2).flip(4)).reshape(1, 8, 8)
    v_sg = estimates(sym, mask, 8, "sg", 2).var()
    v_sag = estimates(sym, mask, 8, "sag", 2, seed=1).var()
    ratio_se = math.sqrt(2) * rel  # relative se of a ratio of two independent sample variances
    assert abs(v_sag / v_sg / (2 * 15 / 14) - 1) <= z * ratio_se


def test_expected_group_counts_equal_exact_shares():
    mask, _ = irregular()
    num = 7
    gid_map = group_ids(mask.shape, 3).reshape(-1)
    idx = sample_many(mask, num, "sag", T, 3, torch.Generator().manual_seed(2))
    counts = torch.zeros(T, 9).scatter_add_(1, gid_map[idx], torch.ones(idx.shape))
    sizes = torch.bincount(gid_map[mask.reshape(-1)], minlength=9).double()
    share = num * sizes / sizes.sum()
    assert bool(((counts - share.floor()) >= 0).all() & ((counts - share.ceil()) <= 0).all())
    z = 4.5  # counts are in {floor, ceil}: sd <= 0.5
    assert (counts.mean(0).double() - share).abs().max() <= z * 0.5 / math.sqrt(T)
