"""Contract tests of arco.sampling: shapes, edge cases, errors, determinism, and the vectorised samplers
against a slow per-group reference loop kept here."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arco.sampling import STRATEGIES, estimate, group_ids, sample, sample_many, sample_per_class


# ------------------------------------------------------------------------------------------- slow reference
def ref_cells(shape, grid):
    """Per position (python tuples): group id and mirror flat index, from explicit cell bounds per axis."""
    spatial = shape[1:]
    grid = (grid,) * len(spatial) if isinstance(grid, int) else tuple(grid)
    bounds = []
    for size, k in zip(spatial, grid):
        # cells [j*L//k, (j+1)*L//k): sizes differ by at most one
        bounds.append([(j * size // k, (j + 1) * size // k - 1) for j in range(k)])
    gid, mirror = {}, {}
    ncell = math.prod(grid)
    for b in range(shape[0]):
        for coord in itertools.product(*[range(s) for s in spatial]):
            cell, mcoord = 0, []
            for ax, x in enumerate(coord):
                j = next(j for j, (r0, r1) in enumerate(bounds[ax]) if r0 <= x <= r1)
                cell = cell * grid[ax] + j
                r0, r1 = bounds[ax][j]
                mcoord.append(r0 + r1 - x)
            flat = b
            mflat = b
            for ax, size in enumerate(spatial):
                flat = flat * size + coord[ax]
                mflat = mflat * size + mcoord[ax]
            gid[flat] = b * ncell + cell
            mirror[flat] = mflat
    return gid, mirror


def ref_shares(mask, grid, num):
    """Exact proportional share num * |P_m| / |P| of every group (dict), by a loop over candidates."""
    gid, _ = ref_cells(tuple(mask.shape), grid)
    cand = mask.reshape(-1).nonzero().squeeze(1).tolist()
    counts = {}
    for p in cand:
        counts[gid[p]] = counts.get(gid[p], 0) + 1
    n = min(num, len(cand))
    return {g: n * c / len(cand) for g, c in counts.items()}, gid


def group_counts(idx, gid):
    out = {}
    for p in idx.tolist():
        out[gid[p]] = out.get(gid[p], 0) + 1
    return out


SHAPES = [(2, 7, 9), (1, 5, 6, 7), (3, 4, 4), (1, 3, 4)]
GRIDS = [3, (2, 3, 4), 2, 5]


@pytest.mark.parametrize("shape,grid", list(zip(SHAPES, GRIDS)))
def test_group_ids_match_reference_loop(shape, grid):
    gid, _ = ref_cells(shape, grid)
    got = group_ids(shape, grid).reshape(-1).tolist()
    assert got == [gid[p] for p in range(len(got))]
    # cells differ by at most one pixel per axis: check the total cell sizes of one image
    sizes = torch.bincount(torch.tensor(got[: math.prod(shape[1:])])).tolist()
    if all(s >= k for s, k in zip(shape[1:], (grid,) * 3 if isinstance(grid, int) else grid)):
        assert min(sizes) > 0


def test_grid_larger_than_image_gives_empty_cells_but_valid_draws():
    mask = torch.ones(1, 3, 4, dtype=torch.bool)
    for s in STRATEGIES:
        idx = sample(mask, 5, s, grid=5, generator=torch.Generator().manual_seed(0))
        assert idx.numel() == 5 and idx.unique().numel() == 5


# ------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape,grid", [((2, 17, 13), 4), ((2, 5, 9, 7), (2, 3, 2))])
def test_sample_contract(strategy, shape, grid):
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(shape, generator=g) < 0.4
    p = int(mask.sum())
    for num in (0, 1, 7, p - 1, p, p + 5):
        idx = sample(mask, num, strategy, grid, g)
        assert idx.dtype == torch.int64 and idx.device == mask.device
        assert idx.numel() == min(num, p)
        assert idx.unique().numel() == idx.numel()
        assert bool(mask.reshape(-1)[idx].all())
    full = sample(mask, p + 5, strategy, grid, g)
    assert torch.equal(full.sort().values, mask.reshape(-1).nonzero().squeeze(1))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_mask_warns_and_returns_empty(strategy):
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.warns(UserWarning, match="no candidates"):
        idx = sample(mask, 10, strategy)
    assert idx.dtype == torch.int64 and idx.numel() == 0
    with pytest.warns(UserWarning, match="no candidates"):
        assert torch.isnan(estimate(torch.rand(2, 8, 8), mask, 10, strategy))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_pixel_groups(strategy):
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, ::2, ::2] = True  # one candidate in each 2x2 cell of a 4x4 grid
    idx = sample(mask, 16, strategy, grid=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx.sort().values, mask.reshape(-1).nonzero().squeeze(1))
    idx = sample(mask, 5, strategy, grid=4, generator=torch.Generator().manual_seed(0))
    assert idx.numel() == 5 and bool(mask.reshape(-1)[idx].all())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_non_contiguous_mask(strategy):
    base = torch.rand(2, 12, 10, generator=torch.Generator().manual_seed(3)) < 0.5
    mask = base.transpose(1, 2)  # (2, 10, 12), not contiguous
    assert not mask.is_contiguous()
    idx = sample(mask, 20, strategy, 3, torch.Generator().manual_seed(0))
    assert bool(mask.reshape(-1)[idx].all()) and idx.unique().numel() == 20
    ref = sample(mask.contiguous(), 20, strategy, 3, torch.Generator().manual_seed(0))
    assert torch.equal(idx, ref)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic_under_generator(strategy):
    mask = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    a = sample(mask, 30, strategy, 4, torch.Generator().manual_seed(7))
    b = sample(mask, 30, strategy, 4, torch.Generator().manual_seed(7))
    c = sample(mask, 30, strategy, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a.sort().values, c.sort().values)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_replace_gives_num_draws(strategy):
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 1:4, 2:7] = True
    idx = sample(mask, 40, strategy, 2, torch.Generator().manual_seed(0), replace=True)
    assert idx.numel() == 40 and bool(mask.reshape(-1)[idx].all())


def test_estimate_is_mean_of_the_drawn_values():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(2, 9, 9, generator=g, dtype=torch.float64)
    mask = values > 0.3
    for s in STRATEGIES:
        est = estimate(values, mask, 12, s, 3, torch.Generator().manual_seed(5))
        idx = sample(mask, 12, s, 3, torch.Generator().manual_seed(5))
        assert est.dtype == torch.float64 and torch.allclose(est, values.reshape(-1)[idx].mean())


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (
            {"strategy": "sga"},
            ValueError,
            r"strategy must be one of 'ns', 'sg', 'sag', got 'sga' \(did you mean 'sag'",
        ),
        (
            {"mask": torch.zeros(2, 1, 64, 64)},
            TypeError,
            r"mask must be a bool tensor .* got float32 of shape",
        ),
        ({"mask": torch.zeros(64, 64, dtype=torch.bool)}, ValueError, r"\(B, H, W\) or \(B, D, H, W\)"),
        ({"mask": [[True]]}, TypeError, "mask must be a torch.Tensor"),
        ({"num": -1}, ValueError, "`num` to be a non-negative integer"),
        ({"num": 2.5}, ValueError, "`num`"),
        ({"grid": (2, 2, 2)}, TypeError, "grid must be an int or a tuple of 2 ints"),
        ({"grid": 0}, ValueError, "grid must be positive"),
    ],
)
def test_sample_errors(kwargs, exc, match):
    args = {"mask": torch.ones(2, 8, 8, dtype=torch.bool), "num": 4, "strategy": "sg", "grid": 2} | kwargs
    with pytest.raises(exc, match=match):
        sample(**args)


def test_estimate_and_per_class_errors():
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="values must have the mask's shape"):
        estimate(torch.rand(1, 4, 5), mask, 3, "ns")
    with pytest.raises(TypeError, match="floating-point"):
        estimate(torch.ones(1, 4, 4, dtype=torch.long), mask, 3, "ns")
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="label must be a integer tensor"):
        sample_per_class(label.float(), 2, 3, "sg")
    with pytest.raises(ValueError, match="num_classes"):
        sample_per_class(label, 0, 3, "sg")
    with pytest.raises(ValueError, match="valid must be a bool tensor of shape"):
        sample_per_class(label, 2, 3, "sg", valid=torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="did you mean 'sag'"):
        sample_per_class(label, 2, 3, "sga")
    with pytest.raises(ValueError, match="did you mean 'sg'"):
        sample_per_class(label, 2, 3, "gs")


# ---------------------------------------------------------------------------------------- vs reference loop
@pytest.mark.parametrize("strategy", ["sg", "sag"])
@pytest.mark.parametrize("shape,grid", [((2, 11, 13), 3), ((1, 6, 7, 5), (2, 3, 2))])
def test_group_counts_are_floor_or_ceil_of_share(strategy, shape, grid):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(2)) < 0.6
    shares, gid = ref_shares(mask, grid, 25)
    draws = sample_many(mask, 25, strategy, 200, grid, torch.Generator().manual_seed(0))
    for row in draws:
        counts = group_counts(row, gid)
        for g, share in shares.items():
            assert math.floor(share) <= counts.get(g, 0) <= math.ceil(share)


def test_sag_pairs_are_mirror_symmetric_on_full_masks():
    # 16x12 image, 4x3 grid: cells 4x4 (no pixel is its own mirror). num=48 gives every group a share of 2:
    # one primary and its mirror, so the draw is exactly closed under mirroring.
    mask = torch.ones(2, 16, 12, dtype=torch.bool)
    _, mirror = ref_cells((2, 16, 12), (4, 3))
    for seed in range(5):
        idx = sample(mask, 48, "sag", (4, 3), torch.Generator().manual_seed(seed))
        chosen = set(idx.tolist())
        assert len(chosen) == 48 and all(mirror[p] in chosen for p in chosen)
    # With 4 per group two primaries may be each other's mirrors; the SAG rule (docs/samplers.md) then replaces
    # both partners by fresh draws, so most (not all) points are paired: P(collision) = 1/15 per group,
    # E[paired] >= 1 - 2/15.
    idx = sample_many(mask, 96, "sag", 50, (4, 3), torch.Generator().manual_seed(0))
    paired = sum(sum(mirror[p] in set(r.tolist()) for p in r.tolist()) for r in idx) / idx.numel()
    assert paired > 0.8


def test_sag_replaces_missing_mirrors_inside_the_group():
    # Only the left half of every cell is a candidate, so no mirror is a candidate: all partners are replaced.
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, :, 0:2] = mask[0, :, 4:6] = True
    shares, gid = ref_shares(mask, 2, 16)
    idx = sample(mask, 16, "sag", 2, torch.Generator().manual_seed(0))
    assert idx.unique().numel() == 16 and bool(mask.reshape(-1)[idx].all())
    assert group_counts(idx, gid) == {g: int(s) for g, s in shares.items()}


# ------------------------------------------------------------------------------------------- sample_per_class
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", [(2, 12, 10), (2, 4, 6, 5)])
def test_sample_per_class_contract(strategy, shape):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, shape, generator=g)
    label[label == 2] = 5  # class 3 absent; 5 is out of range and must be ignored
    label[0, 0] = 2  # a small class 2
    valid = torch.rand(shape, generator=g) < 0.8
    index, ok = sample_per_class(label, 4, 20, strategy, grid=2, valid=valid, generator=g)
    assert index.shape == ok.shape == (4, 20) and index.dtype == torch.int64 and ok.dtype == torch.bool
    assert bool((index >= 0).all() & (index < label.numel()).all())
    lab, val = label.reshape(-1), valid.reshape(-1)
    for c in range(4):
        n = int(((label == c) & valid).sum())
        assert ok[c].tolist() == [j < min(20, n) for j in range(20)]
        picked = index[c][ok[c]]
        assert picked.unique().numel() == picked.numel()
        assert bool((lab[picked] == c).all() & val[picked].all())


@pytest.mark.parametrize("strategy", ["sg", "sag"])
def test_sample_per_class_is_stratified_within_each_class(strategy):
    label = torch.randint(0, 3, (2, 10, 12), generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        index, ok = sample_per_class(label, 3, 15, strategy, grid=(2, 3), generator=g)
        for c in range(3):
            shares, gid = ref_shares(label == c, (2, 3), 15)
            counts = group_counts(index[c][ok[c]], gid)
            assert all(math.floor(s) <= counts.get(k, 0) <= math.ceil(s) for k, s in shares.items())


def test_sample_per_class_sag_draws_mirror_pairs_and_sg_does_not():
    # Two classes filling the two halves of the image, 4x4 cells: SAG's draws of each class are (almost) closed
    # under mirroring through the cell centres, SG's are not; a SAG silently equal to SG fails here.
    label = torch.zeros(2, 16, 16, dtype=torch.long)
    label[:, :, 8:] = 1
    _, mirror = ref_cells((2, 16, 16), (4, 4))
    g = torch.Generator().manual_seed(0)
    paired = {}
    for strategy in ("sg", "sag"):
        hits = total = 0
        for _ in range(20):
            index, ok = sample_per_class(label, 2, 64, strategy, grid=4, generator=g)
            for c in range(2):
                chosen = set(index[c][ok[c]].tolist())
                hits += sum(mirror[p] in chosen for p in chosen)
                total += len(chosen)
        paired[strategy] = hits / total
    # SAG: 4 draws per 16-pixel cell, 2 primaries whose mirrors are kept unless they collide (P = 1/15): >= 0.8.
    # SG: 4 uniform draws per cell: a drawn pixel's mirror is among the other 3 with probability 3/15 = 0.2.
    assert paired["sag"] > 0.8 and paired["sg"] < 0.35


def test_sample_per_class_matches_sample_distribution_of_group_counts():
    # The per-class draw of class c and sample() on (label == c) allocate identically in expectation.
    label = torch.randint(0, 2, (1, 9, 9), generator=torch.Generator().manual_seed(1))
    shares, gid = ref_shares(label == 1, 3, 10)
    g = torch.Generator().manual_seed(0)
    totals = {k: 0 for k in shares}
    trials = 300
    for _ in range(trials):
        index, ok = sample_per_class(label, 2, 10, "sg", grid=3, generator=g)
        for k, v in group_counts(index[1][ok[1]], gid).items():
            totals[k] += v
    for (
        k,
        share,
    ) in shares.items():  # counts in {floor, ceil}: sd <= 0.5; z = 4.5 -> tol 4.5 * 0.5 / sqrt(300)
        assert abs(totals[k] / trials - share) <= 4.5 * 0.5 / math.sqrt(trials)


# ------------------------------------------------------------------------------------------- random shapes
@settings(max_examples=25, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)),
        st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
    ),
    grid=st.integers(1, 5),
    num=st.integers(0, 60),
    strategy=st.sampled_from(STRATEGIES),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_random_masks(shape, grid, num, strategy, density, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=g) < density
    p = int(mask.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idx = sample(mask, num, strategy, grid, g)
    assert idx.numel() == min(num, p) and idx.unique().numel() == idx.numel()
    assert bool(mask.reshape(-1)[idx].all())
    if strategy != "ns" and p:
        shares, gid = ref_shares(mask, grid, num)
        counts = group_counts(idx, gid)
        assert all(math.floor(s) <= counts.get(k, 0) <= math.ceil(s) for k, s in shares.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sample_per_class_has_no_host_sync_on_cuda(strategy):
    label = torch.randint(0, 4, (2, 64, 64), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    sample_per_class(label, 4, 32, strategy, generator=g)  # warm-up: builds the cached maps
    torch.cuda.set_sync_debug_mode("error")
    try:
        index, ok = sample_per_class(label, 4, 32, strategy, generator=g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert index.device.type == "cuda" and ok.device.type == "cuda"
    idx = sample(label == 1, 32, strategy, generator=g)
    assert idx.device.type == "cuda" and bool((label.reshape(-1)[idx] == 1).all())
