"""ICT: Interpolation Consistency Training (Verma et al., IJCAI 2019), as SSL4MIS
``train_interpolation_consistency_training_2D/3D.py`` trains it for segmentation.

The unlabeled batch is split into halves ``u0``, ``u1`` mixed pairwise with ``λ ~ Beta(α, α)`` (α = 0.2):

``L = 0.5·(CE + Dice) + w(t)·mean((softmax(s((1-λ)u0 + λu1)) - ((1-λ)softmax(t(u0)) + λ softmax(t(u1))))^2)``

with ``t`` the EMA teacher and ``w(t)`` Mean Teacher's ramped weight. The student predicts (as SSL4MIS tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from arco.methods.base import Batch, StepOutput
from arco.methods.mean_teacher import MeanTeacherMethod, softmax_mse
from arco.methods.registry import register_method

__all__ = ["ICTConfig", "ICTMethod", "sample_beta", "sample_gamma"]

#: Candidates per Marsaglia-Tsang draw: each is accepted with probability >= 0.95 (shape >= 1), so all 16 fail
#: with probability < 1e-20; then the last candidate is used.
_GAMMA_CANDIDATES = 16


@dataclass(frozen=True)
class ICTConfig:
    """ICT's parameters (SSL4MIS defaults).

    Attributes:
        alpha: mixup coefficient ``λ ~ Beta(alpha, alpha)`` (``--ict_alpha 0.2``).
        ema: teacher momentum (0.99, with SSL4MIS's ``min(1 - 1/(t+1), ema)`` warm-up).
        consistency: final consistency weight (0.1); rampup: fraction of the stage of its sigmoid ramp (1.0).
        sup_weight: ``L_sup = sup_weight·(CE + Dice)`` (0.5).
    """

    alpha: float = 0.2
    ema: float = 0.99
    consistency: float = 0.1
    rampup: float = 1.0
    sup_weight: float = 0.5

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        for name in ("consistency", "rampup"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.sup_weight > 0:
            raise ValueError(f"sup_weight must be > 0, got {self.sup_weight}")


def _log_gamma_variates(shape: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``log X`` for ``n`` draws ``X ~ Gamma(shape, 1)`` (Marsaglia & Tsang 2000, vectorised over candidates;
    shapes below 1 use ``Gamma(a) = Gamma(a + 1)·U^(1/a)``), on the generator's device."""
    dev = generator.device
    boost = shape < 1.0
    d = (shape + 1.0 if boost else shape) - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn(_GAMMA_CANDIDATES, n, generator=generator, device=dev, dtype=torch.float64)
    u = torch.rand(_GAMMA_CANDIDATES, n, generator=generator, device=dev, dtype=torch.float64)
    v = (1.0 + c * x) ** 3
    ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
    ok[-1] = True  # all candidates rejected (p < 1e-20): take the last one
    first = ok.to(torch.int8).argmax(dim=0)  # index of the first accepted candidate per draw
    log_x = math.log(d) + torch.log(v.clamp_min(1e-300)).gather(0, first[None])[0]
    if boost:
        log_x = log_x + torch.log(torch.rand(n, generator=generator, device=dev, dtype=torch.float64)) / shape
    return log_x


def sample_gamma(shape: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` float64 draws of ``Gamma(shape, 1)`` from ``generator`` (torch's own sampler takes no generator)."""
    return _log_gamma_variates(shape, n, generator).exp()


def sample_beta(alpha: float, beta: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` float64 draws of ``Beta(alpha, beta) = X / (X + Y)`` with Gamma variates ``X``, ``Y``, computed as
    ``sigmoid(log X - log Y)`` so tiny shapes (ICT's 0.2) never divide 0 by 0."""
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"sample_beta(): alpha and beta must be > 0, got {alpha}, {beta}")
    return torch.sigmoid(_log_gamma_variates(alpha, n, generator) - _log_gamma_variates(beta, n, generator))


@register_method
class ICTMethod(MeanTeacherMethod):
    """ICT: the student on mixed unlabeled pairs matches the same mix of the EMA teacher's predictions. Needs
    ``schedule.batch_unlabeled >= 2`` (pairs are its halves; an odd last image is left out, as SSL4MIS pairs
    ``labeled_bs/2`` images)."""

    name = "ict"
    config_class = ICTConfig
    description = "ICT: consistency between the student on mixup of unlabeled pairs and the mix of EMA predictions"
    paper = (
        "Verma, Lamb, Kannala, Bengio & Lopez-Paz, Interpolation Consistency Training for Semi-Supervised "
        "Learning, IJCAI 2019"
    )
    loss_names = ("loss_sup", "loss_cons")

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl, h = batch.image_l.shape[0], batch.image_u.shape[0] // 2
        if h == 0:
            raise ValueError("ict mixes pairs of unlabeled images: set schedule.batch_unlabeled >= 2")
        self.start_teacher(step)
        u0, u1 = batch.image_u[:h], batch.image_u[h : 2 * h]
        lam = sample_beta(self.cfg.alpha, self.cfg.alpha, h, self.generator).to(u0.device, u0.dtype)
        lam = lam.view(h, *([1] * (u0.dim() - 1)))
        mixed = (1.0 - lam) * u0 + lam * u1
        logits = self.student(torch.cat([batch.image_l, mixed])).logits
        loss_sup = self.sup(logits[:bl], batch.label_l)
        with torch.no_grad():
            p0, p1 = self.teacher(torch.cat([u0, u1])).logits.float().softmax(1).chunk(2)
            target = (1.0 - lam) * p0 + lam * p1
        loss_cons = softmax_mse(logits[bl:], target).mean()
        loss = loss_sup + self.consistency_weight(step) * loss_cons
        return StepOutput(loss, {"loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach()})
