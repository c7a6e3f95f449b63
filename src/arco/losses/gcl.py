"""The global and local contrastive losses of Chaitanya et al. (NeurIPS 2020), vectorised.

Both are InfoNCE terms with cosine similarity over a temperature, in the paper's per-pair form: for an anchor
``a`` and one of its positives ``p``,

    l(a, p) = -log( exp(s(a, p)) / (exp(s(a, p)) + sum_{n in N(a)} exp(s(a, n))) ),   s = cos / tau,

with the anchor's negatives ``N(a)`` in the denominator and only that one positive (other positives of the anchor
are neither positives nor negatives in that term). The loss is the mean of ``l`` over every ordered
(anchor, positive) pair.

- Global (:func:`global_contrastive_loss`): every image carries a group id; images with the same id are positives
  and images of another id are negatives. The paper's G^D uses the partition of the volume a slice comes from
  (slices of the same partition of different volumes, and their augmented views, are positives); G^R, the
  SimCLR-style baseline, uses one id per image (only its augmented view is positive).
- Local (:func:`local_contrastive_loss`, the paper's L^R): ``A`` local regions of the feature maps of two
  intensity-augmented views of one image; region ``k`` of one view is the positive of region ``k`` of the other,
  and every other region of both views is a negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["global_contrastive_loss", "local_contrastive_loss", "region_corners", "local_regions"]

#: Stands in for ``-inf`` in masked log-sum-exps (finite, so rows without negatives keep finite gradients).
_MASKED = -1e4


def _pair_loss(sim: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean of ``-s_ap + log(exp(s_ap) + sum_neg exp(s_an))`` over the True entries of ``pos`` (``(..., M, M)``)."""
    neg_lse = sim.masked_fill(~neg, _MASKED).logsumexp(-1, keepdim=True)
    per_pair = torch.logaddexp(sim, neg_lse) - sim
    pos_f = pos.to(sim.dtype)
    return (per_pair * pos_f).sum() / pos_f.sum().clamp_min(1.0)


def global_contrastive_loss(z: torch.Tensor, group: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Global contrastive loss over ``M`` embeddings.

    Args:
        z: ``(M, d)`` embeddings (normalised here).
        group: ``(M,)`` int64 group ids (partition or image id); same id = positive pair, other id = negative.
        tau: temperature (paper: 0.1).

    Returns:
        Scalar float32; 0 when no pair shares a group.
    """
    if z.dim() != 2 or group.shape != z.shape[:1]:
        raise ValueError(
            f"global_contrastive_loss(): z must be (M, d) and group (M,), got {tuple(z.shape)} and {tuple(group.shape)}"
        )
    z = F.normalize(z.float(), dim=-1)
    sim = z @ z.t() / tau
    same = group[:, None] == group[None, :]
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return _pair_loss(sim, same & ~eye, ~same)


def local_contrastive_loss(e1: torch.Tensor, e2: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Local contrastive loss (L^R) of ``A`` regions of two views of each of ``N`` images.

    Args:
        e1, e2: ``(N, A, d)`` region embeddings of the two views (normalised here); region ``k`` of ``e1`` and of
            ``e2`` cover the same place of the image.
        tau: temperature (paper: 0.1).

    Returns:
        Scalar float32: the mean over images, both views and all regions.
    """
    if e1.shape != e2.shape or e1.dim() != 3:
        raise ValueError(
            f"local_contrastive_loss(): e1 and e2 must both be (N, A, d), got {tuple(e1.shape)}, {tuple(e2.shape)}"
        )
    a = e1.shape[1]
    e = F.normalize(torch.cat([e1, e2], dim=1).float(), dim=-1)  # (N, 2A, d)
    sim = e @ e.transpose(1, 2) / tau
    idx = torch.arange(2 * a, device=e.device)
    pos = idx[None, :] == ((idx + a) % (2 * a))[:, None]  # region k of the other view
    neg = (idx % a)[:, None] != (idx % a)[None, :]  # any other region, either view
    return _pair_loss(sim, pos.expand_as(sim), neg.expand_as(sim))


def region_corners(height: int, width: int, size: int = 3) -> torch.Tensor:
    """Top-left corners ``(13, 2)`` of the paper code's 13 local regions of a ``height x width`` map: the 3x3 grid
    at 0, 1/2 and 1 of the free range ``[0, side - size - 1]`` and the four points at 1/4 and 3/4 of it
    (``pretr_decoder_local_contrastive_loss.py`` with 13 regions of 3x3).

    Raises:
        ValueError: the map is too small for 13 distinct regions (``min(height, width) < size + 5``).
    """
    if min(height, width) < size + 5:
        raise ValueError(
            f"GCL local loss: the decoder map is {height}x{width}, too small for 13 distinct {size}x{size} regions "
            f"(needs at least {size + 5} per side); use a larger patch or a finer gcl-local decoder_level"
        )
    ih, iw = height - size - 1, width - size - 1
    fr = ((0, 0), (0, 2), (0, 4), (2, 0), (2, 2), (2, 4), (4, 0), (4, 2), (4, 4), (1, 1), (1, 3), (3, 1), (3, 3))
    return torch.tensor([[int(ih * r / 4), int(iw * c / 4)] for r, c in fr], dtype=torch.long)


def local_regions(features: torch.Tensor, corners: torch.Tensor, size: int = 3) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, A, C * size * size)``: each region's window, flattened (one gather)."""
    off = torch.arange(size, device=features.device)
    corners = corners.to(features.device)
    rows = (corners[:, 0:1] + off)[:, :, None]  # (A, size, 1)
    cols = (corners[:, 1:2] + off)[:, None, :]  # (A, 1, size)
    win = features[:, :, rows, cols]  # (N, C, A, size, size)
    return win.permute(0, 2, 1, 3, 4).flatten(2)
