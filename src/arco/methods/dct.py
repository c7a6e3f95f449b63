"""Deep co-training (Qiao et al., ECCV 2018) for segmentation: two networks, agreement on unlabeled images and view
difference through adversarial examples, applied per pixel.

With ``p_1, p_2`` the softmax of the two networks (``student``, ``student2``), ``H`` the entropy and ``H(p, q) =
-sum_c p_c log q_c`` the cross entropy, averaged over pixels:

``L = sum_k w_s (CE + Dice)(p_k(x_l), y) + lambda_cot(t) L_cot(x_u) + lambda_dif(t) L_dif(x_l, x_u)``

- ``L_cot = H((p_1 + p_2) / 2) - (H(p_1) + H(p_2)) / 2``: the Jensen-Shannon divergence of the two networks on the
  unlabeled images (paper Eq. 3);
- ``L_dif = H(p_1(x), p_2(g_1(x))) + H(p_2(x), p_1(g_2(x)))`` on labeled and unlabeled images (paper Eq. 5), where
  ``g_k(x) = x + eps sign(grad_x CE(f_k(x), t))`` is network k's FGSM adversarial example, with ``t`` the label on
  labeled images and network k's own argmax on unlabeled ones (as the authors told the AlanChou re-implementation);
  the adversarial gradient is taken through the same forward pass that the loss uses.

Defaults are the paper's (lambda_cot = 10, lambda_dif = 0.5, sigmoid ramp-up over the first 80 of 600 epochs, FGSM
eps = 0.02 in image intensity units); no stop-gradient, as in the paper's formulas. What differs from the paper:
per-pixel segmentation instead of classification, SSL4MIS's supervised term ``0.5 (CE + Dice)`` per network instead
of CE, one labeled batch shared by both networks (the paper draws one per network), no intensity clipping of the
adversarial image. SSL4MIS's ``train_deep_co_training_2D.py`` is a different, single-network rotation-consistency
method; this follows the paper instead. Predicts with ``student`` (the first network).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from arco.losses import SupervisedLoss
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method

__all__ = ["DCTConfig", "DCTMethod", "js_divergence", "cross_entropy_soft"]


@dataclass(frozen=True)
class DCTConfig:
    """Parameters of deep co-training (defaults: Qiao et al. 2018, Sec. 4 / AlanChou's re-implementation).

    Attributes:
        lambda_cot: weight of the co-training (Jensen-Shannon) term (10).
        lambda_dif: weight of the view-difference term (0.5).
        rampup: fraction of the stage over which both weights follow the sigmoid ramp-up (80 / 600 epochs).
        epsilon: FGSM step in image intensity units (0.02).
        sup_weight: w_s, weight of CE + Dice per network (0.5, the SSL4MIS recipe).
    """

    lambda_cot: float = 10.0
    lambda_dif: float = 0.5
    rampup: float = 80 / 600
    epsilon: float = 0.02
    sup_weight: float = 0.5

    def __post_init__(self) -> None:
        for name in ("lambda_cot", "lambda_dif", "rampup", "epsilon"):
            if getattr(self, name) < 0:
                raise ValueError(f"dct.{name} must be >= 0, got {getattr(self, name)}")
        if not self.sup_weight > 0:
            raise ValueError(f"dct.sup_weight must be > 0, got {self.sup_weight}")


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(dim=1)


def js_divergence(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of ``H((p_1 + p_2) / 2) - (H(p_1) + H(p_2)) / 2`` for logits ``(B, C, *S)``."""
    l1, l2 = logits1.float().log_softmax(dim=1), logits2.float().log_softmax(dim=1)
    mean = 0.5 * (l1.exp() + l2.exp())
    return (_entropy(mean.clamp_min(1e-30).log()) - 0.5 * (_entropy(l1) + _entropy(l2))).mean()


def cross_entropy_soft(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of ``H(p, q) = -sum_c p_c log q_c`` with ``p`` = softmax(target_logits) (not detached)."""
    return -(target_logits.float().softmax(dim=1) * logits.float().log_softmax(dim=1)).sum(dim=1).mean()


@register_method
class DCTMethod(MethodBase):
    """Two networks; Jensen-Shannon agreement on unlabeled pixels and cross-network consistency on each other's
    adversarial examples. Predicts with ``student``."""

    name = "dct"
    config_class = DCTConfig
    description = (
        "deep co-training: two networks agree (Jensen-Shannon) yet differ on each other's adversarial examples"
    )
    paper = "Qiao et al., Deep Co-Training for Semi-Supervised Image Recognition, ECCV 2018"
    loss_names = ("loss_sup", "loss_cot", "loss_dif")
    init_components = ("student", "student2")
    segmenter = "student"
    spatial_dims = (2,)

    def __init__(self, cfg: DCTConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        self.add_backbone("student2")
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def _adversarial(self, x: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """FGSM image ``x + eps sign(grad_x CE(logits, target))`` (``logits`` computed from ``x``)."""
        grad = torch.autograd.grad(F.cross_entropy(logits.float(), target), x, retain_graph=True)[0]
        return (x + self.cfg.epsilon * grad.sign()).detach()

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, bl = self.cfg, batch.image_l.shape[0]
        x = torch.cat([batch.image_l, batch.image_u]).requires_grad_(True)
        logits1, logits2 = self.student(x).logits, self.student2(x).logits
        with torch.no_grad():
            t1 = torch.cat([batch.label_l, logits1[bl:].argmax(dim=1)])
            t2 = torch.cat([batch.label_l, logits2[bl:].argmax(dim=1)])
        g1, g2 = self._adversarial(x, logits1, t1), self._adversarial(x, logits2, t2)
        loss_sup = self.sup(logits1[:bl], batch.label_l) + self.sup(logits2[:bl], batch.label_l)
        loss_cot = js_divergence(logits1[bl:], logits2[bl:])
        loss_dif = cross_entropy_soft(logits1, self.student2(g1).logits) + cross_entropy_soft(
            logits2, self.student(g2).logits
        )
        w_cot = rampup_weight(cfg.lambda_cot, step, self.total_steps, cfg.rampup)
        w_dif = rampup_weight(cfg.lambda_dif, step, self.total_steps, cfg.rampup)
        loss = loss_sup + w_cot * loss_cot + w_dif * loss_dif
        logs = {"loss_sup": loss_sup.detach(), "loss_cot": loss_cot.detach(), "loss_dif": loss_dif.detach()}
        return StepOutput(loss, logs)
