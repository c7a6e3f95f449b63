"""UA-MT: uncertainty-aware Mean Teacher (Yu et al., MICCAI 2019), as in ``yulequan/UA-MT`` and SSL4MIS
``train_uncertainty_aware_mean_teacher_2D/3D.py``.

``L = 0.5·(CE + Dice) + w(t)·sum(m·(softmax(s(x_u)) - softmax(t(x_u + n)))^2) / (C·sum(m) + 1e-16)``

where the mask ``m = [U < H(t)]`` keeps the pixels whose uncertainty ``U = -sum_c p̄_c log(p̄_c + 1e-6)`` (entropy of
the mean teacher softmax ``p̄`` over ``T = 8`` stochastic passes: input noise and dropout) is below the threshold
``H(t) = (0.75 + 0.25·sigmoid_rampup(t, stage)) · ln C``. ``w(t)`` and the EMA teacher are Mean Teacher's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from arco.methods._common import sigmoid_rampup
from arco.methods.base import Batch, StepOutput
from arco.methods.mean_teacher import MeanTeacherConfig, MeanTeacherMethod, input_noise, softmax_mse
from arco.methods.registry import register_method

__all__ = ["UAMTConfig", "UAMTMethod", "mc_dropout", "predictive_entropy"]


@dataclass(frozen=True)
class UAMTConfig(MeanTeacherConfig):
    """UA-MT's parameters: Mean Teacher's (same defaults in UA-MT's ``train_LA_meanteacher_certainty_unlabel.py``
    and SSL4MIS: EMA 0.99, weight 0.1 ramped over the whole schedule, noise clamp(0.1·N, ±0.2)) plus:

    Attributes:
        passes: ``T`` stochastic forward passes of the teacher for the uncertainty (8).
        threshold_start / threshold_end: the entropy threshold ramps from ``threshold_start·ln C`` to
            ``threshold_end·ln C`` (0.75 -> 1, paper §2.2; the code writes ``ln 2`` for its two classes).
        threshold_rampup: fraction of the stage over which the threshold follows the sigmoid ramp (1.0: the code
            ramps over ``max_iterations``).
    """

    passes: int = 8
    threshold_start: float = 0.75
    threshold_end: float = 1.0
    threshold_rampup: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if int(self.passes) < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")
        if not 0 <= self.threshold_start <= self.threshold_end:
            raise ValueError(
                f"threshold_start / threshold_end must satisfy 0 <= start <= end, got {self.threshold_start} / "
                f"{self.threshold_end}"
            )
        if not self.threshold_rampup >= 0:
            raise ValueError(f"threshold_rampup must be >= 0, got {self.threshold_rampup}")


@contextlib.contextmanager
def mc_dropout(module: nn.Module) -> Iterator[None]:
    """Switch only the dropout layers of ``module`` to training mode (Monte Carlo dropout); batch-norm layers keep
    their mode (the teacher's eval-mode running statistics). Restores every dropout layer's mode on exit."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in layers]
    for m in layers:
        m.train(True)
    try:
        yield
    finally:
        for m, mode in zip(layers, modes):
            m.train(mode)


def predictive_entropy(prob: torch.Tensor) -> torch.Tensor:
    """``-sum_c p_c log(p_c + 1e-6)`` over dim 1, kept as ``(B, 1, *S)`` (UA-MT's uncertainty, in nats)."""
    return -(prob * torch.log(prob + 1e-6)).sum(dim=1, keepdim=True)


@register_method
class UAMTMethod(MeanTeacherMethod):
    """Mean Teacher whose consistency counts only the pixels where the teacher is certain. The ``T`` stochastic
    passes run as one batched no-grad forward of ``T·B_u`` images (no Python loop over T; the code loops over
    T/2 chunks of ``2·B_u``): 8x the teacher's activations of one pass, freed layer by layer since no graph is
    kept. Predicts with the student (as UA-MT and SSL4MIS test)."""

    name = "ua-mt"
    config_class = UAMTConfig
    description = "UA-MT: Mean Teacher with the consistency masked by the teacher's MC-dropout uncertainty"
    paper = (
        "Yu, Wang, Li, Fu & Heng, Uncertainty-aware Self-ensembling Model for Semi-supervised 3D Left Atrium "
        "Segmentation, MICCAI 2019"
    )
    loss_names = ("loss_sup", "loss_cons")
    metric_names = ("certain",)

    def threshold(self, step: int) -> float:
        """``H(t) = (start + (end - start)·sigmoid_rampup) · ln C`` (host float)."""
        cfg = self.cfg
        ramp = sigmoid_rampup(step, cfg.threshold_rampup * self.total_steps)
        return (cfg.threshold_start + (cfg.threshold_end - cfg.threshold_start) * ramp) * math.log(self.num_classes)

    @torch.no_grad()
    def uncertainty(self, image_u: torch.Tensor) -> torch.Tensor:
        """Entropy of the teacher's mean softmax over ``T`` passes with fresh input noise and active dropout."""
        cfg, t = self.cfg, int(self.cfg.passes)
        repeated = image_u.repeat(t, *([1] * (image_u.dim() - 1)))
        repeated = repeated + input_noise(repeated, cfg.noise_std, cfg.noise_clip, self.generator)
        with mc_dropout(self.teacher):
            prob = self.teacher(repeated).logits.float().softmax(1)
        return predictive_entropy(prob.view(t, *image_u.shape[:1], *prob.shape[1:]).mean(0))

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, bl = self.cfg, batch.image_l.shape[0]
        self.start_teacher(step)
        logits = self.student(torch.cat([batch.image_l, batch.image_u])).logits
        loss_sup = self.sup(logits[:bl], batch.label_l)
        with torch.no_grad():
            noisy = batch.image_u + input_noise(batch.image_u, cfg.noise_std, cfg.noise_clip, self.generator)
            target = self.teacher(noisy).logits.float().softmax(1)
            mask = (self.uncertainty(batch.image_u) < self.threshold(step)).float()
        dist = softmax_mse(logits[bl:], target)
        loss_cons = (mask * dist).sum() / (self.num_classes * mask.sum() + 1e-16)
        loss = loss_sup + self.consistency_weight(step) * loss_cons
        logs = {"loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach(), "certain": mask.mean()}
        return StepOutput(loss, logs)
