"""ARCO's heads as the reference builds them: the fused representation, the student's linear pair, the logit
windows of stage 1's local branch, and the linear global heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arco.models import FusedRepresentation, LinearHead, LinearPair
from arco.models.windows import WindowHead, logit_windows, window_starts


def _literal(rep: FusedRepresentation, feats: list[torch.Tensor]) -> torch.Tensor:
    """The reference FeatureExtractor level by level, dense (what FusedRepresentation must equal)."""
    mode = "bilinear" if feats[0].dim() == 4 else "trilinear"
    mix = lambda x, w: torch.einsum("bc...,dc->bd...", x, w)  # noqa: E731
    x = feats[0] + mix(feats[0], rep.residual[0])
    for k in range(1, len(feats)):
        x = torch.cat([F.interpolate(x, size=feats[k].shape[2:], mode=mode, align_corners=True), feats[k]], 1)
        x = x + mix(x, rep.residual[k]) if k < len(feats) - 1 else mix(x, rep.out)
    return x


@pytest.mark.parametrize(
    ("channels", "sizes"),
    [
        ([32, 16, 8, 4, 2], [(4, 4), (8, 8), (16, 16), (32, 32), (64, 64)]),
        ([8, 4, 2], [(2, 4, 4), (4, 8, 8), (8, 16, 16)]),
    ],
)
def test_fused_representation_is_the_reference_feature_extractor(channels, sizes):
    torch.manual_seed(0)
    rep = FusedRepresentation(channels, dim=6, spatial_dims=len(sizes[0])).double()
    feats = [torch.randn(2, c, *s, dtype=torch.float64) for c, s in zip(channels, sizes)]
    ref = _literal(rep, feats)
    torch.testing.assert_close(rep.dense(feats), ref, rtol=1e-10, atol=1e-10)
    index = torch.randint(0, ref[:, 0].numel(), (64,), generator=torch.Generator().manual_seed(1))
    rows = ref.movedim(1, -1).reshape(-1, 6)[index]
    torch.testing.assert_close(rep.forward_at(feats, index), rows, rtol=1e-5, atol=1e-5)  # float32 coordinates
    # the gradient of the sparse form reaches every weight and every level
    feats = [f.requires_grad_(True) for f in feats]
    rep.forward_at(feats, index).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rep.parameters())
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)


def test_fused_representation_names_bad_features():
    rep = FusedRepresentation([8, 4], dim=3)
    with pytest.raises(ValueError, match="channels"):
        rep.dense([torch.randn(1, 8, 2, 2), torch.randn(1, 5, 4, 4)])
    with pytest.raises(ValueError, match="at least two"):
        FusedRepresentation([8], dim=3)


def test_heads_are_linear_without_batchnorm_and_the_pair_without_bias():
    pair = LinearPair(5)
    assert [type(m).__name__ for m in pair] == ["Linear", "Linear"] and all(m.bias is None for m in pair)
    x = torch.randn(7, 5)
    torch.testing.assert_close(pair(2 * x), 2 * pair(x))  # linear, no bias
    lin, nonlin = LinearHead(4, 6, 3), LinearHead(4, 6, 3, activation=True)
    assert [type(m).__name__ for m in lin] == ["Linear", "Linear"]
    assert [type(m).__name__ for m in nonlin] == ["Linear", "ReLU", "Linear"]
    # Without BatchNorm an embedding depends on its own row only.
    lin.train()
    y = torch.randn(7, 4)
    torch.testing.assert_close(lin(y[:1]), lin(y)[:1])


@pytest.mark.parametrize(
    ("size", "count", "window", "starts"),
    [(256, 7, 64, [0, 32, 64, 96, 128, 160, 192]), (64, 7, 16, [0, 8, 16, 24, 32, 40, 48]),
     (80, 7, 20, [0, 10, 20, 30, 40, 50, 60])],
)  # fmt: skip
def test_window_geometry_scales_the_reference(size, count, window, starts):
    # 256 px: the reference's windows of 64 every 32 (7 x 7 = 49); the same layout at other sizes
    assert window_starts(size, count) == (window, starts)


def test_logit_windows_pool_each_window():
    logits = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    out = logit_windows(logits, 3, 2)  # windows of 8 at starts 0, 4, 8; pooled to 2 x 2 cells of 4 x 4
    assert out.shape == (2, 9, 3, 4)
    # window (row 1, column 2) = rows 4..11, columns 8..15; its cell (1, 0) = rows 8..11, columns 8..11
    cell = logits[1, 2, 8:12, 8:12].mean()
    assert float(out[1, 1 * 3 + 2, 2, 1 * 2 + 0]) == pytest.approx(float(cell))
    vol = logit_windows(torch.randn(1, 2, 8, 8, 8), 3, 2)
    assert vol.shape == (1, 27, 2, 8)


def test_window_head_mixes_channels_per_cell():
    head = WindowHead(3, 6)
    w = torch.randn(2, 5, 3, 4)
    out = head(w)
    assert out.shape == (2, 5, 12)
    manual = head.second(head.first(w[0, 1, :, 2]))  # the channels of one cell
    torch.testing.assert_close(head(w, flatten=False)[0, 1, :, 2], manual)
