"""Segmentation backbones (``MODELS`` registry), training heads and the EMA teacher.

Example:
    >>> import torch
    >>> from arco.models import MODELS
    >>> net = MODELS.build("unet", in_channels=1, num_classes=4)
    >>> net(torch.zeros(1, 1, 32, 32)).logits.shape
    torch.Size([1, 4, 32, 32])
"""

from __future__ import annotations

from arco.models.ema import ema_update, make_teacher
from arco.models.fused import FusedRepresentation, LinearPair
from arco.models.heads import LinearHead, PredictionHead, ProjectionHead, RepresentationHead, gather_interpolated
from arco.models.norm import frozen_bn_stats
from arco.models.unet import SegOutput, UNet
from arco.models.vnet import VNet
from arco.registry import Registry

__all__ = [
    "MODELS",
    "SegOutput",
    "UNet",
    "VNet",
    "RepresentationHead",
    "FusedRepresentation",
    "LinearPair",
    "LinearHead",
    "ProjectionHead",
    "PredictionHead",
    "gather_interpolated",
    "ema_update",
    "make_teacher",
    "frozen_bn_stats",
]

MODELS: Registry = Registry("model")
MODELS.register("unet")(UNet)
MODELS.register("vnet")(VNet)
