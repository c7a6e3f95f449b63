"""Supervised loss L_sup: ``weight * (cross-entropy + soft Dice)``.

The ARCO stages use the reference code's plain sum (weight 1; docs/methods.md); the SSL4MIS baselines use 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["supervised_loss", "dice_loss", "SupervisedLoss"]

#: SSL4MIS ``DiceLoss`` smoothing term.
DICE_SMOOTH = 1e-5


def _validate(logits: torch.Tensor, label: torch.Tensor, num_classes: int | None, where: str) -> None:
    if logits.dim() not in (4, 5):
        raise ValueError(f"{where}: logits must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(logits.shape)}")
    if label.dtype != torch.long or label.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"{where}: label must be int64 of shape {tuple(logits.shape[:1] + logits.shape[2:])}, "
            f"got {label.dtype} of shape {tuple(label.shape)}"
        )
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(f"{where}: logits have {logits.shape[1]} channels but num_classes={num_classes}")


def dice_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss of softmax probabilities, averaged over all classes including background (as SSL4MIS).

    Per class ``1 - (2 sum(p*y) + eps) / (sum(p^2) + sum(y^2) + eps)`` with sums over the whole batch and
    ``eps = 1e-5``; a class absent from both prediction and label scores ~0 loss.
    """
    probs = logits.float().softmax(1)
    with torch.no_grad():
        onehot = torch.zeros_like(probs).scatter_(1, label.unsqueeze(1), 1.0)
    dims = (0,) + tuple(range(2, probs.dim()))
    inter = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + onehot.sum(dims)
    return (1 - (2 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)).mean()


def supervised_loss(
    logits: torch.Tensor, label: torch.Tensor, num_classes: int | None = None, weight: float = 1.0
) -> torch.Tensor:
    """``weight * (cross_entropy + soft_dice)`` for 2D or 3D segmentation.

    Args:
        logits: ``(B, C, *S)`` float.
        label: ``(B, *S)`` int64 in ``0..C-1``.
        num_classes: optional check of ``C``.
        weight: 1 for the ARCO stages (reference code), 0.5 for the SSL4MIS baselines.

    Returns:
        Scalar float32 tensor.

    Example:
        >>> label = torch.tensor([[[0, 1], [1, 0]]])
        >>> logits = 50 * F.one_hot(label, 2).permute(0, 3, 1, 2).float()
        >>> float(supervised_loss(logits, label)) < 1e-6
        True
    """
    _validate(logits, label, num_classes, "supervised_loss")
    ce = F.cross_entropy(logits.float(), label)
    return weight * (ce + dice_loss(logits, label))


class SupervisedLoss(nn.Module):
    """Module wrapper of :func:`supervised_loss` with a fixed ``weight``."""

    def __init__(self, num_classes: int | None = None, weight: float = 1.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.weight = float(weight)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return supervised_loss(logits, label, self.num_classes, self.weight)
