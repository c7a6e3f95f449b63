"""DTC: Dual-Task Consistency (Luo et al., AAAI 2021), following the authors' LA code (HiLab-git/DTC
``train_la_dtc.py``) in 3D and the same objective on the 2D UNet.

``L = Dice_fg(p_l, y_l) + beta * MSE(s_l, SDF(y_l)) + w(t) * mean((sigmoid(-k s) - p_fg)^2)`` where ``p`` is the
segmentation head's softmax, ``s`` the SDF head's ``tanh`` output (one channel per foreground class), ``SDF`` the
normalised signed distance map of the ground truth (:mod:`arco.losses.sdf`, exact and on the device), ``k = 1500``
and ``w(t) = 1.0 * sigmoid_rampup``; the consistency runs over labeled and unlabeled images alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from arco.methods._common import rampup_weight
from arco.methods._shape import foreground_dice_loss, sdf_head_for, sdf_regression
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method

__all__ = ["DtcConfig", "DtcMethod"]


@dataclass(frozen=True)
class DtcConfig:
    """Parameters of DTC (``train_la_dtc.py`` defaults).

    Attributes:
        beta: weight of the SDF regression ``L_LSF`` (``--beta 0.3``).
        consistency: maximum weight of the dual-task consistency (``--consistency 1.0``).
        rampup: fraction of the stage over which that weight ramps up with ``exp(-5 (1 - t)^2)`` (DTC: 40
            "epochs" of 150 iterations = its whole 6000-iteration schedule, i.e. 1.0).
        k: steepness of the task transform ``sigmoid(-k * sdf)`` (paper and code: 1500).
    """

    beta: float = 0.3
    consistency: float = 1.0
    rampup: float = 1.0
    k: float = 1500.0

    def __post_init__(self) -> None:
        if self.beta < 0 or self.consistency < 0:
            raise ValueError(f"dtc.beta and dtc.consistency must be >= 0, got {self.beta}, {self.consistency}")
        if not 0 <= self.rampup <= 1:
            raise ValueError(f"dtc.rampup must be in [0, 1] (a fraction of the stage), got {self.rampup}")
        if not self.k > 0:
            raise ValueError(f"dtc.k must be > 0, got {self.k}")


@register_method
class DtcMethod(MethodBase):
    """Segmentation + signed-distance heads on one backbone; predicts with the segmentation head (``student``),
    as the paper evaluates."""

    name = "dtc"
    config_class = DtcConfig
    description = "DTC: segmentation + signed-distance heads, dual-task consistency through sigmoid(-k*sdf)"
    paper = "Luo et al., Semi-supervised Medical Image Segmentation through Dual-task Consistency, AAAI 2021"
    loss_names = ("loss_dice", "loss_sdf", "loss_dtc")
    init_components = ("student", "sdf_head")
    segmenter = "student"
    needs_unlabeled = True
    spatial_dims = (2, 3)

    def __init__(self, cfg: DtcConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        self.add_component("sdf_head", sdf_head_for(self.student, num_classes, spatial_dims))

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, bl = self.cfg, batch.image_l.shape[0]
        out = self.student(torch.cat([batch.image_l, batch.image_u]))
        sdf = self.sdf_head(out.features[-1]).float()
        prob = torch.softmax(out.logits.float(), dim=1)
        loss_dice = foreground_dice_loss(prob[:bl], batch.label_l)
        loss_sdf = sdf_regression(sdf[:bl], batch.label_l, self.num_classes)
        loss_dtc = (torch.sigmoid(-cfg.k * sdf) - prob[:, 1:]).square().mean()
        w = rampup_weight(cfg.consistency, step, self.total_steps, cfg.rampup)
        loss = loss_dice + cfg.beta * loss_sdf + w * loss_dtc
        logs = {"loss_dice": loss_dice.detach(), "loss_sdf": loss_sdf.detach(), "loss_dtc": loss_dtc.detach()}
        return StepOutput(loss, logs)
