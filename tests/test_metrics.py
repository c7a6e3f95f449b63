"""arco.evaluation.metrics against medpy (the reference of the paper tables) and hand-made cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from arco.evaluation.metrics import binary_metrics, case_metrics


def _blob(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, level: float) -> np.ndarray:
    """Smoothed noise thresholded: blobs with realistic (irregular, multi-component) surfaces."""
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma) > level


def _pairs():
    rng = np.random.default_rng(1234)
    out = []
    for i in range(60):
        shape = (48, 56) if i % 2 == 0 else (14, 24, 20)
        spacing = None if i % 3 == 0 else tuple(rng.uniform(0.3, 3.0, size=len(shape)))
        pred = _blob(rng, shape, 2.5, rng.uniform(0.0, 0.15))
        gt = _blob(rng, shape, 2.5, rng.uniform(0.0, 0.15))
        if i % 5 == 0:  # a prediction close to the GT, the usual case
            gt = ndimage.binary_dilation(pred, iterations=1) ^ _blob(rng, shape, 1.0, 0.6)
        if pred.any() and gt.any():
            out.append((pred, gt, spacing))
    return out


PAIRS = _pairs()


def test_enough_pairs():
    assert len(PAIRS) >= 50
    assert sum(p.ndim == 3 for p, _, _ in PAIRS) >= 20 and sum(s is not None for _, _, s in PAIRS) >= 20


@pytest.mark.parametrize("idx", range(0, len(PAIRS), 1))
def test_matches_medpy(idx):
    pred, gt, spacing = PAIRS[idx]
    r = binary_metrics(pred, gt, spacing)
    assert r["empty"] == ""
    expected = {
        "dice": medpy_binary.dc(pred, gt),
        "jaccard": medpy_binary.jc(pred, gt),
        "hd95": medpy_binary.hd95(pred, gt),
        "asd": medpy_binary.asd(pred, gt),
    }
    if spacing is not None:
        expected["hd95_mm"] = medpy_binary.hd95(pred, gt, voxelspacing=spacing)
        expected["asd_mm"] = medpy_binary.asd(pred, gt, voxelspacing=spacing)
    else:
        assert "hd95_mm" not in r
    for key, value in expected.items():
        assert r[key] == pytest.approx(value, rel=1e-6, abs=1e-12), key


def test_masks_touching_the_border_match_medpy():
    rng = np.random.default_rng(7)
    pred = _blob(rng, (20, 20, 20), 1.5, -0.3)  # large blobs: many touch the image edge
    gt = _blob(rng, (20, 20, 20), 1.5, -0.3)
    r = binary_metrics(pred, gt, (1.0, 0.5, 2.0))
    assert r["hd95_mm"] == pytest.approx(medpy_binary.hd95(pred, gt, voxelspacing=(1.0, 0.5, 2.0)), rel=1e-6)
    assert r["asd"] == pytest.approx(medpy_binary.asd(pred, gt), rel=1e-6)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_squares_offset_by_k(k):
    # Two 10x10 squares shifted by k pixels along x: every surface distance is 0 or k, hand-countable.
    a = np.zeros((40, 40), dtype=np.int64)
    b = np.zeros_like(a)
    a[10:20, 10:20] = 1
    b[10:20, 10 + k : 20 + k] = 1
    r = case_metrics(a, b, num_classes=2, spacing=(1.0, 2.0))[0]
    assert r["dice"] == pytest.approx(2 * (10 - k) * 10 / 200)
    assert r["jaccard"] == pytest.approx((10 - k) * 10 / ((10 + k) * 10))
    assert r["hd95"] == pytest.approx(k)
    assert r["hd95_mm"] == pytest.approx(2.0 * k)  # the shift is along the axis with 2 mm spacing
    # surface of a: 36 pixels; those farther than k from b's surface: none; distances are 0 or k.
    d = ndimage.distance_transform_edt(~(b.astype(bool) ^ ndimage.binary_erosion(b.astype(bool))))
    border = a.astype(bool) ^ ndimage.binary_erosion(a.astype(bool))
    assert r["asd"] == pytest.approx(d[border].mean())
    assert 0 < r["asd"] <= k


def test_identical_masks():
    a = np.zeros((5, 9, 9), dtype=np.int64)
    a[1:4, 2:7, 3:8] = 2
    a[2, 4, 4] = 1
    rows = case_metrics(a, a, num_classes=3, spacing=(2.0, 1.0, 1.0))
    assert [r["class"] for r in rows] == [1, 2]
    for r in rows:
        assert (r["dice"], r["jaccard"], r["hd95"], r["asd"], r["hd95_mm"], r["asd_mm"]) == (1, 1, 0, 0, 0, 0)


SHAPE = (4, 10, 12)
DIAG = math.sqrt(4**2 + 10**2 + 12**2)
DIAG_MM = math.sqrt(8**2 + 10**2 + 6**2)


def _masks(kind):
    pred, gt = np.zeros(SHAPE, np.int64), np.zeros(SHAPE, np.int64)
    if kind in ("empty_gt", "none"):
        pred[1:3, 2:5, 2:6] = 1
    if kind in ("empty_pred", "none"):
        gt[1:3, 2:5, 3:7] = 1
    return pred, gt


@pytest.mark.parametrize(
    "kind, compat, expected",
    [
        ("both_empty", "default", dict(dice=1, jaccard=1, hd95=0, asd=0, hd95_mm=0, asd_mm=0)),
        (
            "empty_pred",
            "default",
            dict(dice=0, jaccard=0, hd95=DIAG, asd=DIAG, hd95_mm=DIAG_MM, asd_mm=DIAG_MM),
        ),
        (
            "empty_gt",
            "default",
            dict(dice=0, jaccard=0, hd95=DIAG, asd=DIAG, hd95_mm=DIAG_MM, asd_mm=DIAG_MM),
        ),
        ("both_empty", "reference", dict(dice=0, jaccard=0, hd95=0, asd=0, hd95_mm=0, asd_mm=0)),
        ("empty_pred", "reference", dict(dice=0, jaccard=0, hd95=0, asd=0, hd95_mm=0, asd_mm=0)),
        ("empty_gt", "reference", dict(dice=1, jaccard=1, hd95=0, asd=0, hd95_mm=0, asd_mm=0)),
    ],
)
def test_empty_mask_policy(kind, compat, expected):
    pred, gt = _masks(kind)
    with pytest.warns(UserWarning, match=kind):
        r = case_metrics(pred, gt, num_classes=2, spacing=(2.0, 1.0, 0.5), compat=compat)[0]
    assert r["empty"] == kind
    for key, value in expected.items():
        assert r[key] == pytest.approx(value), key


@pytest.mark.parametrize("compat", ["default", "reference"])
def test_non_empty_masks_agree_across_modes(compat):
    pred, gt = _masks("none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = case_metrics(pred, gt, num_classes=2, compat=compat)[0]
    assert r["empty"] == ""
    assert r["dice"] == pytest.approx(medpy_binary.dc(pred, gt))
    assert r["hd95"] == pytest.approx(medpy_binary.hd95(pred, gt))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pred=np.zeros((4, 4), int), gt=np.zeros((4, 5), int), num_classes=2), "same shape"),
        (dict(pred=np.zeros((4, 4), int), gt=np.zeros((4, 4), int), num_classes=1), "num_classes"),
        (dict(pred=np.full((4, 4), 3), gt=np.zeros((4, 4), int), num_classes=2), "pred labels must lie"),
        (
            dict(pred=np.zeros((4, 4), int), gt=np.zeros((4, 4), int), num_classes=2, spacing=(1.0,)),
            "spacing",
        ),
        (
            dict(pred=np.zeros((4, 4), int), gt=np.zeros((4, 4), int), num_classes=2, compat="ref"),
            "did you mean",
        ),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        case_metrics(**kwargs)
