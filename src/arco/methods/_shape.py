"""Pieces DTC and SASSNet share: the signed-distance head on the backbone, its supervised targets, and the Dice
of the foreground classes.

Both originals are binary (one sigmoid channel for the left atrium). Here the segmentation head is the backbone's
``C``-class softmax (so the model evaluates and predicts like every other arco method) and the SDF head has one
``tanh`` channel per foreground class; for ``C = 2`` the foreground softmax probability is exactly the sigmoid of
the logit difference, so the binary objectives are reproduced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arco.losses.sdf import class_sdf
from arco.models.aux_heads import SDFHead

__all__ = ["foreground_dice_loss", "sdf_head_for", "sdf_regression"]

#: DTC / SASSNet ``losses.dice_loss`` smoothing term.
SMOOTH = 1e-5


def foreground_dice_loss(prob: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean over foreground classes of ``1 - (2 sum(p y) + eps) / (sum(p^2) + sum(y^2) + eps)``, sums over the
    whole batch: DTC / SASSNet ``losses.dice_loss`` on each foreground channel (their only channel when binary).

    Args:
        prob: ``(B, C, *S)`` softmax probabilities. label: ``(B, *S)`` int64.
    """
    onehot = F.one_hot(label, prob.shape[1]).movedim(-1, 1).to(prob.dtype)
    dims = (0,) + tuple(range(2, prob.dim()))
    p, y = prob[:, 1:], onehot[:, 1:]
    inter = (p * y).sum(dims)
    denom = (p * p).sum(dims) + (y * y).sum(dims)
    return (1 - (2 * inter + SMOOTH) / (denom + SMOOTH)).mean()


def sdf_head_for(student: nn.Module, num_classes: int, spatial_dims: int) -> SDFHead:
    """An SDF head on the student's last decoder map, with the kernel of its output convolution."""
    kernel = int(getattr(getattr(student, "out_conv", None), "kernel_size", (1,))[0])
    return SDFHead(spatial_dims, student.feature_channels[-1], num_classes - 1, kernel)


def sdf_regression(sdf_pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``MSE(sdf_pred, SDF(label))`` over every channel and position of the labeled images (DTC / SASSNet
    ``loss_sdf``), the targets computed on the device (:func:`arco.losses.sdf.class_sdf`)."""
    target = class_sdf(label, num_classes).to(sdf_pred.device)
    return F.mse_loss(sdf_pred.float(), target)
