"""Training-only heads: an FPN-style representation head, projectors and predictors.

- :class:`RepresentationHead` (``Linear - BN - ReLU - Linear`` on the concatenated decoder levels): ACTION's head
  (ReCo's), kept for that method. ARCO's own representation is :class:`arco.models.fused.FusedRepresentation`,
  the reference code's ``FeatureExtractor``.
- :class:`LinearHead`: ``Linear -> Linear`` (the reference code's projector and predictor, no BatchNorm, no
  activation) or ``Linear -> ReLU -> Linear`` (the paper's "non-linear" projector): ARCO's global heads.
- :class:`ProjectionHead` / :class:`PredictionHead`: ``Linear - BN - ReLU - Linear`` (SS-Net's heads).

The heads' layers after the per-level interpolation are pointwise, so a representation can be evaluated only at
the pixels a sampler picked (``forward_at``, through :func:`gather_interpolated`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RepresentationHead", "LinearHead", "ProjectionHead", "PredictionHead", "gather_interpolated"]


def gather_interpolated(
    feature: torch.Tensor, index: torch.Tensor, spatial_shape: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Values of ``feature`` up-sampled to ``spatial_shape`` at flat positions ``index`` (sparse up-sampling).

    Matches ``F.interpolate(feature, size=spatial_shape, mode="bilinear"/"trilinear", align_corners=...)``
    (including PyTorch's edge clamping) at the requested positions.

    Args:
        feature: ``(B, C, *s)`` map, ``len(s)`` in (2, 3).
        index: ``(N,)`` long flat positions into ``(B, *spatial_shape)``.
        spatial_shape: full-resolution spatial size ``S``.
        align_corners: PyTorch's flag (the reference code's ``FeatureExtractor`` up-samples with ``True``).

    Returns:
        ``(N, C)`` tensor with ``feature``'s dtype and device (differentiable w.r.t. ``feature``).
    """
    c = feature.shape[1]
    small = feature.shape[2:]
    # Index the (B, C, *s) map in place: a channels-last copy of every level (and its backward, an index_add
    # into a (B * prod(s), C) buffer) cost far more than the few thousand points gathered.
    planes = feature.reshape(feature.shape[0], c, -1)
    # Decompose the flat index into (batch, *coords) with integer arithmetic (row-major).
    rest = index
    coords = []
    for size in reversed(spatial_shape):
        coords.append(rest % size)
        rest = rest // size
    coords.reverse()
    batch = rest
    lo, hi, frac = [], [], []
    for pos, full, n in zip(coords, spatial_shape, small):
        # float32 coordinates even under autocast: half precision cannot index 256+ pixels exactly.
        if align_corners:
            src = pos.float() * ((n - 1) / (full - 1) if full > 1 else 0.0)
        else:
            src = ((pos.float() + 0.5) * (n / full) - 0.5).clamp_min(0)
        i0 = src.floor().long().clamp_max(n - 1)
        lo.append(i0)
        hi.append((i0 + 1).clamp_max(n - 1))
        frac.append((src - i0.to(src.dtype)).clamp(0, 1))
    flats, weights = [], []
    for corner in itertools.product((0, 1), repeat=len(small)):  # 4 (2D) or 8 (3D) corners, gathered at once
        flat = torch.zeros_like(index)
        weight = torch.ones_like(frac[0])
        for axis, bit in enumerate(corner):
            flat = flat * small[axis] + (hi[axis] if bit else lo[axis])
            weight = weight * (frac[axis] if bit else 1 - frac[axis])
        flats.append(flat)
        weights.append(weight)
    position = torch.stack(flats)  # (corners, N)
    values = planes[batch.expand_as(position), :, position]  # (corners, N, C)
    return (values * torch.stack(weights).to(values.dtype).unsqueeze(-1)).sum(0)


class RepresentationHead(nn.Module):
    """FPN-style fusion of decoder features into a ``dim``-channel per-pixel representation (paper: D = 512).

    Each pyramid level is brought to full resolution by (bi/tri)linear interpolation and the levels are
    concatenated (equivalently: a 1x1 conv per level, then added), followed by pointwise
    ``Linear - BN - ReLU - Linear`` layers (ACTION's / ReCo's head). Because interpolation commutes with the
    pointwise layers, ``forward_at`` evaluates the head only at sampled pixels.

    Args:
        in_channels: channels of each feature level, coarse -> fine (e.g. ``model.feature_channels``).
        dim: output representation width.
        spatial_dims: 2 or 3.
        hidden: width of the fused layer (default ``dim``).

    Example:
        >>> head = RepresentationHead([8, 4], dim=16).eval()
        >>> feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 4, 8, 8)]
        >>> head.forward_at(feats, torch.tensor([0, 5, 127]), (8, 8)).shape
        torch.Size([3, 16])
    """

    def __init__(
        self, in_channels: Sequence[int], dim: int = 512, spatial_dims: int = 2, hidden: int | None = None
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"RepresentationHead: spatial_dims must be 2 or 3, got {spatial_dims}")
        if not in_channels or any(c < 1 for c in in_channels) or dim < 1:
            raise ValueError(
                f"RepresentationHead: in_channels must be a non-empty list of positive ints and dim >= 1, "
                f"got {list(in_channels)} and {dim}"
            )
        hidden = dim if hidden is None else hidden
        self.in_channels = list(in_channels)
        self.dim = dim
        self.spatial_dims = spatial_dims
        self.mlp = nn.Sequential(
            nn.Linear(sum(self.in_channels), hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, dim),
        )

    def _check(self, features: Sequence[torch.Tensor]) -> None:
        got = [f.shape[1] if f.dim() == self.spatial_dims + 2 else None for f in features]
        if got != self.in_channels:
            raise ValueError(
                f"RepresentationHead: expected {len(self.in_channels)} maps (B, C, *S) with "
                f"{self.spatial_dims} spatial dims and channels {self.in_channels}, "
                f"got shapes {[tuple(f.shape) for f in features]}"
            )

    def forward_at(
        self, features: Sequence[torch.Tensor], index: torch.Tensor, spatial_shape: Sequence[int]
    ) -> torch.Tensor:
        """Representations ``(N, dim)`` at flat positions ``index`` (long, ``(N,)``) into ``(B,
        *spatial_shape)``; in training mode BatchNorm normalises over the ``N`` points."""
        self._check(features)
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if len(spatial_shape) != self.spatial_dims:
            raise ValueError(f"RepresentationHead: spatial_shape must have {self.spatial_dims} entries")
        rows = torch.cat([gather_interpolated(f, index, spatial_shape) for f in features], dim=1)
        return self.mlp(rows)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Dense ``(B, dim, *S)`` map at the finest level's resolution (tests and small inputs only)."""
        self._check(features)
        size = features[-1].shape[2:]
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        up = [
            f if f.shape[2:] == size else F.interpolate(f, size=size, mode=mode, align_corners=False) for f in features
        ]
        x = torch.cat(up, dim=1)
        rows = self.mlp(x.movedim(1, -1).reshape(-1, x.shape[1]))
        return rows.reshape(*x.shape[:1], *size, self.dim).movedim(-1, 1)


class LinearHead(nn.Sequential):
    """``Linear(in, hidden) -> [ReLU] -> Linear(hidden, out)`` on ``(B, in_dim)`` rows, no normalisation.

    ``activation=False`` is the reference code's projector and predictor (``MLP.f1 -> f2`` and
    ``latent_predictor``: two linear layers, the predictor's BatchNorm and ReLU commented out); ``True`` is the
    paper's "non-linear" projector. Without BatchNorm every row is embedded on its own, whatever the batch.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, activation: bool = False) -> None:
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise ValueError(f"LinearHead: dims must be >= 1, got {in_dim}, {hidden_dim}, {out_dim}")
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
        if activation:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers, nn.Linear(hidden_dim, out_dim))


class ProjectionHead(nn.Sequential):
    """Non-linear projector ``Linear - BN1d - ReLU - Linear`` on ``(B, in_dim)`` embeddings (needs ``B >= 2``
    in training mode, like any BatchNorm)."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> None:
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise ValueError(f"{type(self).__name__}: dims must be >= 1, got {in_dim}, {hidden_dim}, {out_dim}")
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class PredictionHead(ProjectionHead):
    """Student-only predictor (BYOL asymmetry against collapse); same shape as :class:`ProjectionHead`."""

    def __init__(self, in_dim: int = 128, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__(in_dim, hidden_dim, out_dim)
