"""ARCO's stage-2 pixel representation as the reference code builds it (``FeatureExtractor`` in
``code/model_2D.py`` / ``FeatureExtractor_3d`` in ``code/model_3D.py``; docs/design.md).

The network's ``L`` feature levels ``f_0 .. f_{L-1}`` (coarse -> fine: the bottleneck and the decoder levels; UNet:
256/128/64/32/16 channels, ``sum`` = 496) are fused by bias-free 1x1 convolutions with residuals::

    x_0 = (I + W_0) f_0
    x_k = (I + W_k) [up(x_{k-1}); f_k]          0 < k < L-1   (up: (bi/tri)linear, align_corners=True)
    out = W_out [up(x_{L-2}); f_{L-1}]          (dim channels, full resolution)

Every step is linear and up-sampling commutes with 1x1 convolutions, so ``out = up(y) + B . f_{L-1}`` with
``y = up(... up(up(A_0 f_0) + A_1 f_1) ...) + A_{L-2} f_{L-2}`` (Horner's scheme), where the ``A_k (dim, c_k)`` and
``B`` are products of the weights (:meth:`FusedRepresentation.effective`). Each level is mixed down to ``dim``
channels at its own resolution and only ``dim``-channel maps are up-sampled: the same function (up to float
rounding; tested against the literal level-by-level form), at a small fraction of the reference's cost (its dense
496x496 convolutions at full resolution), and evaluated at sampled pixels only where that is all a loss needs.

The student's representation is this map through two bias-free linear 1x1 convolutions (:class:`LinearPair`,
``q_representation``); the teacher's is the map of the EMA copy alone (``k_feature_extractor``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from arco.models.heads import gather_interpolated

__all__ = ["FusedRepresentation", "LinearPair"]


def _up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=True)


def _pointwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1x1 convolution without bias: ``(B, C_in, *S) -> (B, C_out, *S)`` with ``weight (C_out, C_in)``."""
    return torch.einsum("bc...,dc->bd...", x, weight.to(x.dtype))


class FusedRepresentation(nn.Module):
    """The reference ``FeatureExtractor``: ``L`` levels fused to ``dim`` channels at full resolution.

    Args:
        in_channels: channels of the levels, coarse -> fine (e.g. ``[bottleneck] + decoder levels``).
        dim: output channels (reference: the sum of ``in_channels``, 496 for the 2D UNet; 16 in 3D).
        spatial_dims: 2 or 3.

    ``features`` given to the methods below are the ``L`` maps ``(B, c_k, *s_k)``; the finest one must be at full
    resolution (UNet and VNet decoders are).

    Example:
        >>> rep = FusedRepresentation([8, 4, 2], dim=6)
        >>> feats = [torch.randn(2, 8, 2, 2), torch.randn(2, 4, 4, 4), torch.randn(2, 2, 8, 8)]
        >>> rep.dense(feats).shape, rep.forward_at(feats, torch.tensor([0, 127])).shape
        (torch.Size([2, 6, 8, 8]), torch.Size([2, 6]))
    """

    def __init__(self, in_channels: Sequence[int], dim: int, spatial_dims: int = 2) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"FusedRepresentation: spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(in_channels) < 2 or any(int(c) < 1 for c in in_channels) or dim < 1:
            raise ValueError(
                "FusedRepresentation: in_channels must list at least two positive channel counts and dim >= 1, "
                f"got {list(in_channels)} and {dim}"
            )
        self.in_channels = [int(c) for c in in_channels]
        self.dim = int(dim)
        self.spatial_dims = spatial_dims
        self.cum = list(itertools.accumulate(self.in_channels))
        # W_k acts on the cum[k] channels of level k (the reference's fea0..fea{L-2}); init as Conv's default.
        self.residual = nn.ParameterList([nn.Parameter(torch.empty(c, c)) for c in self.cum[:-1]])
        self.out = nn.Parameter(torch.empty(self.dim, self.cum[-1]))
        for w in (*self.residual, self.out):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    # ------------------------------------------------------------------------------------------ the maths
    def effective(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``([A_0, ..., A_{L-2}], B)``: the ``(dim, c_k)`` maps applied to the raw levels (module docstring) and
        ``B (dim, c_{L-1})`` to the finest one. Costs ``dim * sum(cum[k]^2)`` multiply-adds (41 M at dim 64)."""
        cut = self.cum[-2]
        m, finest = self.out[:, :cut], self.out[:, cut:]
        blocks = []
        for k in range(len(self.residual) - 1, -1, -1):
            m = m + m @ self.residual[k]  # m (I + W_k)
            if k > 0:  # (I + W_k) acts on [up(x_{k-1}); f_k]: f_k's raw channels are done, x_{k-1} recurses
                blocks.append(m[:, self.cum[k - 1] :])
                m = m[:, : self.cum[k - 1]]
        blocks.append(m)
        return blocks[::-1], finest

    def coarse(self, features: Sequence[torch.Tensor], blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """``y (B, dim, *s_{L-2})``: every level but the finest, mixed to ``dim`` channels at its own resolution
        and up-sampled level by level (as the reference up-samples) to the second-finest grid."""
        self._check(features)
        y = _pointwise(features[0], blocks[0])
        for f, a in zip(features[1:-1], blocks[1:]):
            y = _up(y, f.shape[2:]) + _pointwise(f, a)
        return y

    # ------------------------------------------------------------------------------------------ outputs
    def dense(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The full-resolution map ``(B, dim, *S)`` (what the reference computes for the teacher keys)."""
        blocks, b = self.effective()
        finest = features[-1]
        return _up(self.coarse(features, blocks), finest.shape[2:]) + _pointwise(finest, b)

    def forward_at(self, features: Sequence[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """``(N, dim)``: the map at flat positions ``index`` (long ``(N,)``) into ``(B, *S)``, ``S`` the finest
        level's size; the last up-sampling and the finest level are evaluated at those positions only."""
        blocks, b = self.effective()
        finest = features[-1]
        spatial = tuple(finest.shape[2:])
        y = gather_interpolated(self.coarse(features, blocks), index, spatial, align_corners=True)
        planes = finest.reshape(finest.shape[0], finest.shape[1], -1)
        n = math.prod(spatial)
        own = planes[index // n, :, index % n]
        return y + own @ b.T.to(own.dtype)

    forward = forward_at

    def _check(self, features: Sequence[torch.Tensor]) -> None:
        got = [f.shape[1] if f.dim() == self.spatial_dims + 2 else None for f in features]
        if got != self.in_channels:
            raise ValueError(
                f"FusedRepresentation: expected {len(self.in_channels)} maps (B, C, *S) with {self.spatial_dims} "
                f"spatial dims and channels {self.in_channels}, got shapes {[tuple(f.shape) for f in features]}"
            )


class LinearPair(nn.Sequential):
    """The student's two bias-free linear maps ``dim -> dim -> dim`` after the fused map (the reference's
    ``q_representation``: two 1x1 convolutions, no bias, no activation), applied to ``(N, dim)`` rows."""

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"LinearPair: dim must be >= 1, got {dim}")
        super().__init__(nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False))
