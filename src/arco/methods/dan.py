"""DAN: Deep Adversarial Networks (Zhang et al., MICCAI 2017), as SSL4MIS trains it.

``L = 0.5 (CE + Dice)(labeled) + w(t) * CE(D(softmax(f(x_u)), x_u), labeled)`` for the segmenter ``f`` and
``L_D = CE(D(softmax(f(x)).detach(), x), [labeled | unlabeled])`` for the discriminator ``D`` (SSL4MIS
``FCDiscriminator`` / ``FC3DDiscriminator`` on (prediction, image) pairs), trained with Adam (lr 1e-4, betas
(0.9, 0.99), constant), ``w(t) = 0.1 * sigmoid_rampup``. Both terms share one backward pass (see
:mod:`arco.methods._adversarial`); the logged ``loss`` includes ``L_D``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from arco.losses import SupervisedLoss
from arco.methods._adversarial import adversarial_terms, discriminator_group
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method
from arco.models.aux_heads import FCDiscriminator

__all__ = ["DanConfig", "DanMethod"]


@dataclass(frozen=True)
class DanConfig:
    """Parameters of DAN (SSL4MIS ``train_adversarial_network_2D.py`` / ``_3D.py`` defaults).

    Attributes:
        adv_weight: maximum weight of the adversarial term (SSL4MIS ``--consistency 0.1``).
        rampup: fraction of the stage over which the weight ramps up with ``exp(-5 (1 - t)^2)`` (SSL4MIS: 200
            "epochs" of 150 iterations = the whole 30k schedule, i.e. 1.0).
        disc_lr: discriminator learning rate (SSL4MIS ``--DAN_lr 1e-4``), not scaled by the lr schedule.
        disc_betas: Adam betas of the discriminator (SSL4MIS: (0.9, 0.99)).
        ndf: filters of the discriminator's first layer (SSL4MIS: 64).
        sup_weight: ``L_sup = sup_weight * (CE + Dice)`` (SSL4MIS: 0.5).
    """

    adv_weight: float = 0.1
    rampup: float = 1.0
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.99)
    ndf: int = 64
    sup_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.adv_weight < 0:
            raise ValueError(f"dan.adv_weight must be >= 0, got {self.adv_weight}")
        if not 0 <= self.rampup <= 1:
            raise ValueError(f"dan.rampup must be in [0, 1] (a fraction of the stage), got {self.rampup}")
        if not self.disc_lr > 0:
            raise ValueError(f"dan.disc_lr must be > 0, got {self.disc_lr}")
        if not all(0 <= b < 1 for b in self.disc_betas):
            raise ValueError(f"dan.disc_betas must be two numbers in [0, 1), got {self.disc_betas}")
        if self.ndf < 1:
            raise ValueError(f"dan.ndf must be >= 1, got {self.ndf}")
        if not self.sup_weight > 0:
            raise ValueError(f"dan.sup_weight must be > 0, got {self.sup_weight}")


@register_method
class DanMethod(MethodBase):
    """Segmenter + (prediction, image) discriminator; predicts with the segmenter ``student`` (as the paper)."""

    name = "dan"
    config_class = DanConfig
    description = "DAN: adversarial loss on unlabeled predictions from a (prediction, image) discriminator"
    paper = (
        "Zhang et al., Deep Adversarial Networks for Biomedical Image Segmentation Utilizing Unannotated Images, "
        "MICCAI 2017 (SSL4MIS training recipe)"
    )
    loss_names = ("loss_sup", "loss_adv", "loss_disc")
    metric_names = ("disc_acc",)
    init_components = ("student",)
    segmenter = "student"
    needs_unlabeled = True
    spatial_dims = (2, 3)

    def __init__(self, cfg: DanConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        # SSL4MIS pools the 2D discriminator to 2x2 cells (AvgPool2d(7) on 16x16) and the 3D one to a single cell.
        disc = FCDiscriminator(
            spatial_dims, num_classes, model.in_channels, cfg.ndf, pool=2 if spatial_dims == 2 else 1
        )
        self.add_component("discriminator", disc)
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def param_groups(self) -> list[dict[str, Any]]:
        seg = [p for p in self.student.parameters() if p.requires_grad]
        return [{"params": seg}, discriminator_group(self.discriminator, self.cfg.disc_lr, self.cfg.disc_betas)]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl = batch.image_l.shape[0]
        x = torch.cat([batch.image_l, batch.image_u])
        logits = self.student(x).logits
        loss_sup = self.sup(logits[:bl], batch.label_l)
        prob = torch.softmax(logits.float(), dim=1)
        loss_adv, loss_disc, acc = adversarial_terms(self.discriminator, prob, x, bl)
        w = rampup_weight(self.cfg.adv_weight, step, self.total_steps, self.cfg.rampup)
        loss = loss_sup + w * loss_adv + loss_disc
        logs = {
            "loss_sup": loss_sup.detach(),
            "loss_adv": loss_adv.detach(),
            "loss_disc": loss_disc.detach(),
            "disc_acc": acc,
        }
        return StepOutput(loss, logs)
