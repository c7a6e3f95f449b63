"""The device signed-distance maps against DTC's scipy recipe (distance_transform_edt + inner boundary)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from arco.losses.sdf import class_sdf, normalized_sdf, squared_distance_transform


def dtc_reference(mask: np.ndarray) -> np.ndarray:
    """DTC ``compute_sdf`` per image: scipy EDT and skimage's inner boundary (face-connected, written with scipy)."""
    out = np.zeros(mask.shape)
    for b, pos in enumerate(mask):
        if not pos.any():
            continue
        posdis, negdis = ndimage.distance_transform_edt(pos), ndimage.distance_transform_edt(~pos)
        inner = pos & ~ndimage.binary_erosion(pos, ndimage.generate_binary_structure(pos.ndim, 1), border_value=1)
        sdf = (negdis - negdis.min()) / (negdis.max() - negdis.min()) - (posdis - posdis.min()) / (
            posdis.max() - posdis.min()
        )
        sdf[inner] = 0
        out[b] = sdf
    return out


def _masks(shape, seed=0):
    rng = np.random.default_rng(seed)
    m = ndimage.binary_opening(rng.random(shape) < 0.35, np.ones((1,) + (2,) * (len(shape) - 1)))
    m[0] = False  # an image without foreground
    m[(1, *[slice(2, 5)] * (len(shape) - 1))] = True  # and one with a sure foreground blob
    return m


@pytest.mark.parametrize("shape", [(4, 19, 23), (3, 9, 11, 13)])
@pytest.mark.parametrize("backend", ["torch", "scipy"])
def test_normalized_sdf_matches_dtc_reference(shape, backend):
    m = _masks(shape)
    got = normalized_sdf(torch.from_numpy(m), backend).numpy()
    np.testing.assert_allclose(got, dtc_reference(m), atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 31, 17), (2, 7, 12, 9)])
def test_torch_and_scipy_distance_transforms_are_identical(shape):
    feats = torch.from_numpy(np.random.default_rng(1).random(shape) < 0.05)
    feats[0] = False  # no feature: inf everywhere
    a, b = squared_distance_transform(feats, "torch"), squared_distance_transform(feats, "scipy")
    assert torch.equal(a, b)
    assert torch.isinf(a[0]).all() and torch.isfinite(a[1:]).all()


def test_hand_computed_line_and_degenerate_masks():
    line = torch.tensor([[0, 0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    # outside: distances 2, 1 (max 2); inside: 1, 2, 2, 1 (max 2), inner boundary at both ends -> 0
    expected = torch.tensor([[1.0, 0.5, 0.0, -1.0, -1.0, 0.0, 0.5]])
    for backend in ("torch", "scipy"):
        assert torch.equal(normalized_sdf(line, backend), expected)
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    assert torch.equal(normalized_sdf(full), -torch.ones(1, 4, 4))  # DTC's code gives 0/0 here
    assert torch.equal(normalized_sdf(~full), torch.zeros(1, 4, 4))  # absent class: 0, as DTC


def test_class_sdf_has_one_channel_per_foreground_class():
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    label[:, 2:5, 2:5] = 1
    label[1, 6:, 6:] = 2
    sdf = class_sdf(label, 3)
    assert sdf.shape == (2, 2, 8, 8)
    assert torch.equal(sdf[:, 0], normalized_sdf(label == 1))
    assert torch.equal(sdf[0, 1], torch.zeros(8, 8)) and sdf[1, 1, 7, 7] < 0 < sdf[1, 1, 0, 0]
    with pytest.raises(ValueError, match="int64"):
        class_sdf(label.float(), 3)
