"""Supervised baseline on the labeled data only (UNet-L; UNet-F when every case is labeled)."""

from __future__ import annotations

from dataclasses import dataclass

from arco.losses import SupervisedLoss
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput, build_backbone

__all__ = ["SupervisedConfig", "SupervisedMethod"]


@dataclass(frozen=True)
class SupervisedConfig:
    """Schedule of the supervised baseline.

    Attributes:
        iterations: optimiser steps (ARCO reference code: 30 000 per stage).
        batch: labeled images per step (ACDC: 4 in the paper's fine-tuning stage).
    """

    iterations: int = 30000
    batch: int = 4


class SupervisedMethod(MethodBase):
    """``L = L_sup`` (cross-entropy + soft Dice) on labeled batches; no teacher, no unlabeled data."""

    needs_unlabeled = False

    def __init__(self, cfg: SupervisedConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(num_classes, spatial_dims)
        self.cfg = cfg
        self.student, self.predictor_spec = build_backbone(model, num_classes, spatial_dims)
        self.sup = SupervisedLoss()
        self._modules = {"student": self.student}
        self._trainable = ["student"]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        out = self.student(batch.image_l)
        loss = self.sup(out.logits, batch.label_l)
        return StepOutput(loss, {"loss_sup": loss.detach()})

    def predictor(self):
        return self.student
