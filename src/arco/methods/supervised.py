"""Supervised baseline on the labeled data only: UNet-L, or UNet-F when every training case is labeled."""

from __future__ import annotations

from dataclasses import dataclass

from arco.losses import SupervisedLoss
from arco.methods.base import Batch, ModelConfig, StepOutput, StudentMethod
from arco.methods.registry import register_method

__all__ = ["SupervisedConfig", "SupervisedMethod"]


@dataclass(frozen=True)
class SupervisedConfig:
    """Parameters of the supervised baseline.

    Attributes:
        loss_weight: ``L = loss_weight * (CE + soft Dice)``; 0.5 as in every SSL4MIS baseline script (the ARCO
            stages use the reference code's plain sum, weight 1; with plain SGD the factor acts as a learning-rate
            scale, so it is kept where each method's own code has it).
    """

    loss_weight: float = 0.5

    def __post_init__(self) -> None:
        if not self.loss_weight > 0:
            raise ValueError(f"supervised.loss_weight must be > 0, got {self.loss_weight}")


@register_method
class SupervisedMethod(StudentMethod):
    """``L = w·(CE + Dice)`` on labeled batches; no teacher, no unlabeled data."""

    name = "supervised"
    config_class = SupervisedConfig
    description = "supervised baseline on the labeled cases only (UNet-L; UNet-F with every case labeled)"
    paper = "Ronneberger et al., U-Net, MICCAI 2015 (SSL4MIS training recipe)"
    loss_names = ("loss_sup",)
    needs_unlabeled = False

    def __init__(self, cfg: SupervisedConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.sup = SupervisedLoss(weight=cfg.loss_weight)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        loss = self.sup(self.student(batch.image_l).logits, batch.label_l)
        return StepOutput(loss, {"loss_sup": loss.detach()})
