"""Entropy minimisation (EM; Vu et al., ADVENT, CVPR 2019, direct entropy loss), as SSL4MIS
``train_entropy_minimization_2D/3D.py`` trains it.

``L = 0.5·(CE + Dice)(f(x_l), y_l) + w(t)·mean_pixels(-sum_c p_c log(p_c + 1e-6) / ln C)``

with ``p = softmax(f(x))`` over the whole batch (labeled and unlabeled images, as SSL4MIS) and ``w(t)`` the sigmoid
ramp-up to 0.1 over the stage. One network, no teacher; it predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from arco.losses import SupervisedLoss
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method

__all__ = ["EntropyMinConfig", "EntropyMinMethod", "normalized_entropy"]


@dataclass(frozen=True)
class EntropyMinConfig:
    """Parameters of entropy minimisation (SSL4MIS defaults).

    Attributes:
        consistency: final weight of the entropy term (``--consistency 0.1``).
        rampup: fraction of the stage of the sigmoid ramp-up (1.0 = SSL4MIS's 200 x 150 of 30 000 iterations).
        sup_weight: ``L_sup = sup_weight·(CE + Dice)`` (0.5, SSL4MIS).
        include_labeled: the entropy averages over labeled and unlabeled predictions (True, as SSL4MIS applies
            ``entropy_loss`` to the whole batch); False keeps only the unlabeled ones (ADVENT's target images).
    """

    consistency: float = 0.1
    rampup: float = 1.0
    sup_weight: float = 0.5
    include_labeled: bool = True

    def __post_init__(self) -> None:
        for name in ("consistency", "rampup"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.sup_weight > 0:
            raise ValueError(f"sup_weight must be > 0, got {self.sup_weight}")


def normalized_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of ``-sum_c p_c log(p_c + 1e-6) / ln C`` with ``p = softmax(logits)`` (SSL4MIS
    ``entropy_loss``; ADVENT's entropy map normalised to [0, 1])."""
    p = logits.float().softmax(1)
    return (-(p * torch.log(p + 1e-6)).sum(1) / math.log(logits.shape[1])).mean()


@register_method
class EntropyMinMethod(MethodBase):
    """Supervised loss plus the ramped, normalised prediction entropy; the one network predicts."""

    name = "entropy-min"
    config_class = EntropyMinConfig
    description = "Entropy minimisation (EM): L_sup + ramped normalised entropy of the predictions"
    paper = (
        "Vu, Jain, Bucher, Cord & Pérez, ADVENT: Adversarial Entropy Minimization for Domain Adaptation in "
        "Semantic Segmentation, CVPR 2019"
    )
    loss_names = ("loss_sup", "loss_ent")
    init_components = ("student",)
    segmenter = "student"
    spatial_dims = (2, 3)

    def __init__(self, cfg: EntropyMinConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, bl = self.cfg, batch.image_l.shape[0]
        logits = self.student(torch.cat([batch.image_l, batch.image_u])).logits
        loss_sup = self.sup(logits[:bl], batch.label_l)
        loss_ent = normalized_entropy(logits if cfg.include_labeled else logits[bl:])
        loss = loss_sup + rampup_weight(cfg.consistency, step, self.total_steps, cfg.rampup) * loss_ent
        return StepOutput(loss, {"loss_sup": loss_sup.detach(), "loss_ent": loss_ent.detach()})
