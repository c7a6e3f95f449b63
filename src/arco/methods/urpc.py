"""Uncertainty-rectified pyramid consistency (Luo et al., MICCAI 2021) as in SSL4MIS.

The ``student`` backbone's full-resolution output and three deep-supervision heads (``pyramid``) on its decoder
levels /8, /4, /2, up-sampled to the input size, give S = 4 predictions ``p_s``. With ``p_bar`` their mean and the
per-pixel uncertainty ``u_s = KL(p_bar || p_s) = sum_c p_bar log(p_bar / p_s)``:

``L = 1/S sum_s w_s (CE + Dice)(p_s(x_l), y)
      + lambda(t) 1/S sum_s [ mean(exp(-u_s) (p_bar - p_s)^2) / (mean(exp(-u_s)) + 1e-8) + mean(u_s) ]``

on the unlabeled images (SSL4MIS ``train_uncertainty_rectified_pyramid_consistency_2D.py`` / ``_3D.py``; no
stop-gradient anywhere, as there). In training the heads read perturbed features as SSL4MIS: 2D ``Decoder_URPC``
(3x3 heads, nearest up-sampling; dropout p = 0.5 at /8, feature dropout at /4, feature noise at /2); 3D
``unet_3D_dv_semi`` (1x1x1 heads ``UnetDsv3``, trilinear up-sampling, channel dropout 0.5 / 0.3 / 0.2; SSL4MIS
puts these dropouts on its 3D UNet's decoder path, which also feeds the main output, while here they perturb the
heads' inputs only and the VNet is unchanged). Predicts with ``student`` (the full-resolution output; SSL4MIS tests
``output_main``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from arco.losses import SupervisedLoss
from arco.methods._bydim import with_dim_defaults
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method
from arco.models.multidecoder import PyramidHeads
from arco.models.perturbations import feature_dropout, feature_noise, random_dropout

__all__ = ["URPCConfig", "URPCMethod", "rectified_consistency"]

#: SSL4MIS's per-dimension ramp-up: ``--consistency_rampup`` 200 epochs (2D) / 400 epochs (3D) of 150 iterations
#: over a 30k-iteration schedule, so the 3D weight only reaches ``exp(-5 * 0.5^2) = 0.29`` of its maximum.
DIM_DEFAULTS = {2: {"rampup": 1.0}, 3: {"rampup": 2.0}}


@dataclass(frozen=True)
class URPCConfig:
    """Parameters of URPC (defaults: SSL4MIS ``train_uncertainty_rectified_pyramid_consistency_2D/3D.py``).

    Attributes:
        consistency: lambda (``--consistency 0.1`` in 2D and 3D).
        rampup: sigmoid ramp-up length as a fraction of the stage; ``None`` = SSL4MIS's (1.0 in 2D, 2.0 in 3D:
            see :data:`DIM_DEFAULTS`).
        sup_weight: w_s, weight of CE + Dice per output (``(sum CE + sum Dice) / 8`` over 4 outputs -> 0.5).
        perturb: perturb the heads' input features in training (SSL4MIS does).
    """

    consistency: float = 0.1
    rampup: float | None = None
    sup_weight: float = 0.5
    perturb: bool = True

    def __post_init__(self) -> None:
        if self.consistency < 0:
            raise ValueError(f"urpc.consistency must be >= 0, got {self.consistency}")
        if self.rampup is not None and self.rampup < 0:
            raise ValueError(f"urpc.rampup must be >= 0, got {self.rampup}")
        if not self.sup_weight > 0:
            raise ValueError(f"urpc.sup_weight must be > 0, got {self.sup_weight}")


def rectified_consistency(logits: list[torch.Tensor]) -> torch.Tensor:
    """URPC's uncertainty-rectified consistency of the predictions ``logits`` (each ``(B, C, *S)``) with their
    mean probability, averaged over the predictions (see the module docstring)."""
    logp = torch.stack([lg.float().log_softmax(dim=1) for lg in logits])  # (S, B, C, *spatial)
    prob = logp.exp()
    mean = prob.mean(dim=0, keepdim=True)
    u = (mean * (mean.clamp_min(1e-30).log() - logp)).sum(dim=2, keepdim=True)  # (S, B, 1, *spatial)
    w = torch.exp(-u)
    dims = tuple(range(1, prob.dim()))
    dist = ((mean - prob) ** 2 * w).mean(dim=dims)  # mean over B, C, *spatial as SSL4MIS's torch.mean
    per_output = dist / (w.mean(dim=dims) + 1e-8) + u.mean(dim=dims)
    return per_output.mean()


@register_method
class URPCMethod(MethodBase):
    """Backbone + pyramid heads; supervised loss on every scale, uncertainty-rectified consistency with their
    mean on unlabeled images."""

    name = "urpc"
    config_class = URPCConfig
    description = "uncertainty-rectified pyramid consistency: multi-scale outputs agree with their mean, KL-weighted"
    paper = (
        "Luo et al., Efficient Semi-Supervised Gross Target Volume of Nasopharyngeal Carcinoma Segmentation via "
        "Uncertainty Rectified Pyramid Consistency, MICCAI 2021"
    )
    loss_names = ("loss_sup", "loss_cons")
    init_components = ("student",)
    segmenter = "student"
    spatial_dims = (2, 3)

    def __init__(self, cfg: URPCConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.cfg = with_dim_defaults(cfg, spatial_dims, DIM_DEFAULTS)
        self.add_backbone("student")
        levels = self.student.feature_channels[:3]  # /8, /4, /2
        if spatial_dims == 2:
            heads = PyramidHeads(levels, num_classes, 2, kernel_size=3, mode="nearest")
        else:
            heads = PyramidHeads(levels, num_classes, 3, kernel_size=1, mode="trilinear")
        self.add_component("pyramid", heads)
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def _perturb(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.cfg.perturb:
            return features
        f8, f4, f2 = features
        g = self.generator
        if self.dims == 2:
            return [random_dropout(f8, 0.5, g), feature_dropout(f4, g), feature_noise(f2, g)]
        return [random_dropout(f, p, g, channels=True) for f, p in zip(features, (0.5, 0.3, 0.2))]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl = batch.image_l.shape[0]
        x = torch.cat([batch.image_l, batch.image_u])
        out = self.student(x)
        aux = self.pyramid(self._perturb(out.features[:3]), x.shape[2:])
        outputs = [out.logits, *aux]
        loss_sup = sum(self.sup(o[:bl], batch.label_l) for o in outputs) / len(outputs)
        loss_cons = rectified_consistency([o[bl:] for o in outputs])
        weight = rampup_weight(self.cfg.consistency, step, self.total_steps, self.cfg.rampup)
        loss = loss_sup + weight * loss_cons
        return StepOutput(loss, {"loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach()})
