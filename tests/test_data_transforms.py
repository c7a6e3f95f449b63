"""Augmentation invariants: image and label move together; CutMix uses one box for image and targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arco.augment import color_jitter, cutmix, gaussian_blur, random_similarity, warp
from arco.data.transforms import weak_2d, weak_3d


def _blocks(shape, seed=0):
    """Piecewise-constant image (large blocks) whose label is a threshold of the image."""
    rng = np.random.default_rng(seed)
    coarse = rng.random(tuple(max(1, s // 8) for s in shape))
    img = np.kron(coarse, np.ones((8,) * len(shape)))[tuple(slice(0, s) for s in shape)].astype(np.float32)
    return img, (img > 0.5).astype(np.uint8)


def test_weak_2d_label_follows_image():
    img, lab = _blocks((64, 48))
    torch.manual_seed(0)
    for _ in range(10):
        x, y = weak_2d(img, lab, (40, 40), rotation=30, max_zoom=1.3)
        assert x.shape == (1, 40, 40) and x.dtype == torch.float32
        assert y.shape == (40, 40) and y.dtype == torch.int64
        agree = ((x[0] > 0.5).long() == y).float().mean()
        assert agree > 0.93  # only block borders (bilinear vs nearest) may differ
        assert set(torch.unique(y).tolist()) <= {0, 1}  # nearest: no new label values


def test_weak_2d_flip_only_is_exact():
    img, lab = _blocks((32, 32), seed=1)
    torch.manual_seed(1)
    seen = set()
    for _ in range(12):
        x, y = weak_2d(img, lab, (32, 32), rotation=0.0, max_zoom=1.0)
        flipped = np.array_equal(y.numpy(), lab[:, ::-1])
        assert flipped or np.array_equal(y.numpy(), lab)
        np.testing.assert_allclose(x[0].numpy(), img[:, ::-1] if flipped else img, atol=1e-5)
        seen.add(flipped)
    assert seen == {True, False}


def test_weak_2d_no_augment_resize():
    img, lab = _blocks((32, 32))
    x, y = weak_2d(img, lab, (32, 32), augment=False)
    np.testing.assert_array_equal(x[0].numpy(), img)
    np.testing.assert_array_equal(y.numpy(), lab)
    x, y = weak_2d(img, None, (64, 64), augment=False)
    assert x.shape == (1, 64, 64) and y is None


def test_weak_3d_crop_rot_flip_exact():
    img, lab = _blocks((20, 24, 24))
    torch.manual_seed(0)
    for _ in range(8):
        x, y = weak_3d(img, lab, (16, 16, 16))
        assert x.shape == (1, 16, 16, 16) and y.shape == (16, 16, 16)
        assert torch.equal((x[0] > 0.5).long(), y)
    x, y = weak_3d(img[:10], lab[:10], (16, 16, 16), augment=False)  # smaller than the patch: zero padded
    assert x.shape == (1, 16, 16, 16) and torch.equal((x[0] > 0.5).long(), y)


def _indexed(b, spatial):
    idx = torch.arange(b, dtype=torch.float32).view(b, *([1] * (len(spatial) + 1)))
    image = idx.expand(b, 1, *spatial).clone()
    return image, image[:, 0].long().clone(), image[:, 0].clone() / 10


@pytest.mark.parametrize("spatial", [(16, 20), (6, 8, 10)])
def test_cutmix_same_box_for_image_and_targets(spatial):
    image, label, conf = _indexed(4, spatial)
    g = torch.Generator().manual_seed(0)
    xm, ym, cm = cutmix(image, label, conf, generator=g)
    assert xm.shape == image.shape and ym.dtype == torch.int64
    assert torch.equal(xm[:, 0].long(), ym)
    assert torch.allclose(xm[:, 0] / 10, cm)
    changed = ym != label
    for b in range(4):  # the pasted region is one axis-aligned box (checked by its bounding box)
        if changed[b].any():
            nz = changed[b].nonzero()
            lo, hi = nz.min(0).values, nz.max(0).values
            box = tuple(slice(int(a), int(c) + 1) for a, c in zip(lo, hi))
            assert changed[b][box].all()
            assert (ym[b][box] != b).all() and len(torch.unique(ym[b][box])) == 1
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(cutmix(image, label, conf, generator=g2)[1], ym)  # deterministic under a generator
    assert image[1, 0].eq(1).all()  # inputs untouched


@pytest.mark.parametrize("b", [2, 3, 5])
def test_cutmix_never_pastes_an_image_into_itself(b):
    # The partner of image i is image (i + 1) mod B (the reference's): every mixed image shows its partner's box.
    image, label, _ = _indexed(b, (12, 12))
    for seed in range(10):
        _, ym = cutmix(image, label, generator=torch.Generator().manual_seed(seed), p=1.0, area=(0.5, 0.5))
        for i in range(b):
            assert set(torch.unique(ym[i]).tolist()) == {i, (i + 1) % b}


def test_cutmix_p0_identity_and_bad_shapes():
    image, label, conf = _indexed(3, (8, 8))
    out = cutmix(image, label, generator=torch.Generator().manual_seed(1), p=0.0)
    assert torch.equal(out[0], image) and torch.equal(out[1], label)
    with pytest.raises(ValueError, match="target"):
        cutmix(image, label[:, :4])


@pytest.mark.parametrize("spatial", [(16, 16), (8, 8, 8)])
def test_color_jitter(spatial):
    x = torch.rand(4, 1, *spatial)
    g = torch.Generator().manual_seed(0)
    y = color_jitter(x, g)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert torch.equal(color_jitter(x, torch.Generator().manual_seed(0)), y)
    assert torch.equal(color_jitter(x, g, p=0.0), x)


@pytest.mark.parametrize("spatial", [(16, 16), (8, 10, 12)])
def test_gaussian_blur(spatial):
    x = torch.rand(3, 1, *spatial)
    g = torch.Generator().manual_seed(0)
    y = gaussian_blur(x, g, p=1.0)
    assert y.shape == x.shape and y.std() < x.std()  # smoothing lowers the variance
    assert torch.allclose(gaussian_blur(x, g, p=0.0), x, atol=1e-5)
    const = torch.full((2, 1, *spatial), 0.3)
    assert torch.allclose(gaussian_blur(const, g, p=1.0), const, atol=1e-5)


def test_warp_identity_and_exact_quarter_turn():
    x = torch.arange(2 * 16.0).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    ident = random_similarity(2, 2, g, x.device, rotate=0.0, scale=(1.0, 1.0), translate=0.0, mirror=False)
    assert torch.allclose(warp(x, ident), x, atol=1e-5)
    quarter = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]]).repeat(2, 1, 1)  # pixel centres map onto centres
    assert torch.equal(warp(x, quarter, mode="nearest"), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.allclose(warp(x, quarter), warp(x, quarter, mode="nearest"), atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_random_similarity_ranges(spatial_dims):
    n = 4000
    t = random_similarity(n, spatial_dims, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert t.shape == (n, spatial_dims, spatial_dims + 1)
    block = t[:, :2, :2]
    zoom = 1 / block.det().abs().sqrt()  # the content grows by the zoom factor
    assert zoom.min() >= 0.8 - 1e-5 and zoom.max() <= 1.2 + 1e-5
    angle = torch.rad2deg(torch.atan2(-t[:, 0, 1], t[:, 1, 1]))  # column 1 (the y axis) is never mirrored
    assert angle.abs().max() <= 60 + 1e-3 and angle.abs().max() > 55  # +-60 degrees, reached
    mirrored = block.det() < 0
    # mirror with probability 1/2: 4000 draws, 5 standard deviations = 0.04
    assert abs(float(mirrored.float().mean()) - 0.5) < 0.04
    assert t[:, :, -1].abs().max() <= 0.1 + 1e-6
    if spatial_dims == 3:  # the depth axis is only zoomed, never rotated into the plane
        assert torch.allclose(t[:, 2, :2], torch.zeros(n, 2)) and torch.allclose(t[:, :2, 2], torch.zeros(n, 2))
