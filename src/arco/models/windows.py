"""Stage 1's local branch as the reference code builds it (``ISD.forward`` in ``code/model_2D.py``, docs/methods.md):
overlapping windows of the network's output *logits*, each average-pooled to a small grid and passed through 1x1
convolutions (the student also through a predictor of two more).

Reference sizes at 256x256: windows of 64 pixels every 32 (7 x 7 = 49 windows), each pooled to 8 x 8; 3D (LA,
112x112x80): windows of 20 voxels every 10, pooled to 8^3. Here the window count per axis is the parameter and the
window is scaled to the patch: ``window = 2 * size // (count + 1)`` with the ``count`` windows spread evenly from
one edge to the other (7 windows per axis at any size: 64 px -> windows of 16 every 8; 256 px -> 64 every 32, the
reference's), so the number of windows, and the embedding size ``C * pool^d``, never depend on the patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["logit_windows", "window_starts", "WindowHead"]


def window_starts(size: int, count: int) -> tuple[int, list[int]]:
    """``(window, starts)`` along an axis of ``size``: ``count`` windows of ``2 * size // (count + 1)`` (at least 1)
    whose starts are spread evenly over ``[0, size - window]``."""
    window = max(1, 2 * int(size) // (int(count) + 1))
    span = int(size) - window
    return window, [(i * span) // (count - 1) if count > 1 else 0 for i in range(count)]


def logit_windows(logits: torch.Tensor, count: int, pool: int) -> torch.Tensor:
    """``(B, C, *S)`` -> ``(B, count**d, C, pool**d)``: every window (row-major over the window grid),
    average-pooled to a ``pool^d`` grid (``adaptive_avg_pool``, as the reference's ``AdaptiveAvgPool``)."""
    b, c = logits.shape[:2]
    dims = logits.dim() - 2
    x = logits
    for axis, size in enumerate(logits.shape[2:]):
        window, starts = window_starts(size, count)
        x = x.unfold(2 + axis, window, 1)  # every window position, as a strided view
        x = x.index_select(2 + axis, torch.tensor(starts, device=x.device))
    windows = count**dims
    order = (0, *range(2, 2 + dims), 1, *range(2 + dims, 2 + 2 * dims))  # (B, n.., C, w..)
    x = x.permute(order).reshape(b * windows, c, *x.shape[2 + dims :])
    pooled = (F.adaptive_avg_pool2d if dims == 2 else F.adaptive_avg_pool3d)(x, pool)
    return pooled.reshape(b, windows, c, -1)


class WindowHead(nn.Module):
    """1x1 convolutions over the pooled windows ``(B, W, C, P)`` -> embeddings ``(B, W, C * P)``.

    ``hidden = 2 * C`` is the reference's ``ProjectionHead('convmlp')`` (``C -> 2C -> C``, with bias, no
    activation); ``hidden = C`` its ``outputs_predictor`` (``C -> C -> C``). ``activation`` puts a ReLU between
    the two (the paper's "non-linear" heads).
    """

    def __init__(self, channels: int, hidden: int, activation: bool = False) -> None:
        super().__init__()
        if min(channels, hidden) < 1:
            raise ValueError(f"WindowHead: channels and hidden must be >= 1, got {channels}, {hidden}")
        self.first = nn.Linear(channels, hidden)
        self.act = nn.ReLU() if activation else nn.Identity()
        self.second = nn.Linear(hidden, channels)

    def forward(self, windows: torch.Tensor, flatten: bool = True) -> torch.Tensor:
        x = windows.transpose(-1, -2)  # (B, W, P, C): the 1x1 convolutions act on C
        x = self.second(self.act(self.first(x))).transpose(-1, -2)
        return x.flatten(-2) if flatten else x
