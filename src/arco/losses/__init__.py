"""ARCO losses: L_sup, stage-1 L_inst, stage-2 L_contrast, L_unsup and L_nn (docs/methods.md).

Stateful losses (queues, banks) keep preallocated device buffers (moved by ``.to()``, saved in ``state_dict``)
and expose ``enqueue`` for the method to call after the optimiser step.
"""

from __future__ import annotations

from arco.losses.contrastive import PixelContrastiveLoss, pixel_contrastive_loss
from arco.losses.instance import RelationalInstanceLoss, relational_kl
from arco.losses.neighbours import NearestNeighbourLoss, nearest_neighbour_loss
from arco.losses.supervised import SupervisedLoss, dice_loss, supervised_loss
from arco.losses.unsupervised import unsup_loss

__all__ = [
    "SupervisedLoss",
    "supervised_loss",
    "dice_loss",
    "RelationalInstanceLoss",
    "relational_kl",
    "PixelContrastiveLoss",
    "pixel_contrastive_loss",
    "unsup_loss",
    "NearestNeighbourLoss",
    "nearest_neighbour_loss",
]
