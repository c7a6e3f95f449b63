"""SASSNet: shape-aware semi-supervised segmentation (Li et al., MICCAI 2020), following the authors' LA code
(kleinzcy/SASSnet ``train_gan_sdfloss.py``) in 3D and the same objective on the 2D UNet (their repository also
ships the 2D discriminator).

Segmenter: ``L = Dice_fg(p_l, y_l) + beta * MSE(s_l, SDF(y_l)) + w(t) * CE(D(s_u, x_u), labeled)`` with ``s`` the
SDF head's ``tanh`` output (one channel per foreground class) and ``w(t) = 0.01 * sigmoid_rampup``.
Discriminator (shape-aware: it sees predicted signed-distance maps with their images):
``L_D = CE(D(s.detach(), x), [labeled | unlabeled])``, Adam lr 1e-4, betas (0.9, 0.99), constant. Both in one
backward pass (:mod:`arco.methods._adversarial`); the logged ``loss`` includes ``L_D``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from arco.methods._adversarial import adversarial_terms, discriminator_group
from arco.methods._common import rampup_weight
from arco.methods._shape import foreground_dice_loss, sdf_head_for, sdf_regression
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method
from arco.models.aux_heads import FCDiscriminator

__all__ = ["SassnetConfig", "SassnetMethod"]


@dataclass(frozen=True)
class SassnetConfig:
    """Parameters of SASSNet (``train_gan_sdfloss.py`` defaults and the README's 16-label setting).

    Attributes:
        beta: weight of the SDF regression (``--beta 0.3``).
        adv_weight: maximum weight of the adversarial term (``--consistency 0.01``; the README uses 0.015 with
            8 labeled scans).
        rampup: fraction of the stage over which that weight ramps up with ``exp(-5 (1 - t)^2)`` (40 "epochs"
            of 150 iterations = the whole 6000-iteration schedule, i.e. 1.0).
        disc_lr: discriminator learning rate (``--D_lr 1e-4``), not scaled by the lr schedule.
        disc_betas: Adam betas of the discriminator ((0.9, 0.99)).
        ndf: filters of the discriminator's first layer (64).
    """

    beta: float = 0.3
    adv_weight: float = 0.01
    rampup: float = 1.0
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.99)
    ndf: int = 64

    def __post_init__(self) -> None:
        if self.beta < 0 or self.adv_weight < 0:
            raise ValueError(f"sassnet.beta and sassnet.adv_weight must be >= 0, got {self.beta}, {self.adv_weight}")
        if not 0 <= self.rampup <= 1:
            raise ValueError(f"sassnet.rampup must be in [0, 1] (a fraction of the stage), got {self.rampup}")
        if not self.disc_lr > 0:
            raise ValueError(f"sassnet.disc_lr must be > 0, got {self.disc_lr}")
        if not all(0 <= b < 1 for b in self.disc_betas):
            raise ValueError(f"sassnet.disc_betas must be two numbers in [0, 1), got {self.disc_betas}")
        if self.ndf < 1:
            raise ValueError(f"sassnet.ndf must be >= 1, got {self.ndf}")


@register_method
class SassnetMethod(MethodBase):
    """Segmentation + SDF heads and a discriminator on (SDF, image) pairs; predicts with the segmentation head
    (``student``), as the paper evaluates."""

    name = "sassnet"
    config_class = SassnetConfig
    description = "SASSNet: signed-distance head with a shape-aware adversarial discriminator on predicted SDFs"
    paper = "Li, Zhang, He, Shape-aware Semi-supervised 3D Semantic Segmentation for Medical Images, MICCAI 2020"
    loss_names = ("loss_dice", "loss_sdf", "loss_adv", "loss_disc")
    metric_names = ("disc_acc",)
    init_components = ("student", "sdf_head")
    segmenter = "student"
    needs_unlabeled = True
    spatial_dims = (2, 3)

    def __init__(self, cfg: SassnetConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        self.add_component("sdf_head", sdf_head_for(self.student, num_classes, spatial_dims))
        disc = FCDiscriminator(spatial_dims, num_classes - 1, model.in_channels, cfg.ndf, pool=1)
        self.add_component("discriminator", disc)

    def param_groups(self) -> list[dict[str, Any]]:
        seg = [p for m in (self.student, self.sdf_head) for p in m.parameters() if p.requires_grad]
        return [{"params": seg}, discriminator_group(self.discriminator, self.cfg.disc_lr, self.cfg.disc_betas)]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, bl = self.cfg, batch.image_l.shape[0]
        x = torch.cat([batch.image_l, batch.image_u])
        out = self.student(x)
        sdf = self.sdf_head(out.features[-1]).float()
        prob = torch.softmax(out.logits.float(), dim=1)
        loss_dice = foreground_dice_loss(prob[:bl], batch.label_l)
        loss_sdf = sdf_regression(sdf[:bl], batch.label_l, self.num_classes)
        loss_adv, loss_disc, acc = adversarial_terms(self.discriminator, sdf, x, bl)
        w = rampup_weight(cfg.adv_weight, step, self.total_steps, cfg.rampup)
        loss = loss_dice + cfg.beta * loss_sdf + w * loss_adv + loss_disc
        logs = {
            "loss_dice": loss_dice.detach(),
            "loss_sdf": loss_sdf.detach(),
            "loss_adv": loss_adv.detach(),
            "loss_disc": loss_disc.detach(),
            "disc_acc": acc,
        }
        return StepOutput(loss, logs)
