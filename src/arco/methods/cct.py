"""Cross-consistency training (Ouali et al., CVPR 2020) with SSL4MIS's ``UNet_CCT`` for medical images.

One encoder, a main decoder (the ``student`` UNet's own) and K = 3 auxiliary decoders. Each auxiliary decoder
reads the encoder maps (all five levels, skips included, as SSL4MIS) after its own perturbation: multiplicative
uniform feature noise (r = 0.3), dropout (p = 0.3) and feature dropout of the most activated regions
(threshold U(0.7, 0.9) times the maximum channel-mean). With ``p`` the main decoder's and ``p_k`` the auxiliary
decoders' softmax:

``L = 1/(K+1) sum_{d in main, aux} w_s (CE + Dice)(p_d(x_l), y) + lambda(t) 1/K sum_k mean (sg[p(x_u)] - p_k(x_u))^2``

Following SSL4MIS ``train_cross_consistency_training_2D.py``: every decoder is supervised on the labeled images
(``(sum CE + sum Dice) / 8``), the consistency is the MSE of softmax on the unlabeled images, lambda = 0.1 with a
sigmoid ramp-up over the whole schedule. Following the CCT paper and its code, the main decoder's prediction is the
*target* (``sg``: no gradient); SSL4MIS lets the consistency also pull the main decoder. Predicts with ``student``
(encoder + main decoder), as SSL4MIS's test uses the main output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from arco.losses import SupervisedLoss
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput, build_backbone
from arco.methods.registry import register_method
from arco.models.multidecoder import DecoderBranch
from arco.models.perturbations import feature_dropout, feature_noise, random_dropout

__all__ = ["CCTConfig", "CCTMethod"]


@dataclass(frozen=True)
class CCTConfig:
    """Parameters of CCT (defaults: SSL4MIS ``train_cross_consistency_training_2D.py`` and ``UNet_CCT``).

    Attributes:
        consistency: lambda, weight of the auxiliary-to-main consistency (``--consistency 0.1``).
        rampup: fraction of the stage over which lambda ramps up (sigmoid; ``--consistency_rampup 200`` epochs of
            150 iterations = the whole 30k schedule -> 1.0).
        sup_weight: w_s, weight of CE + Dice per decoder (``/8`` over 4 decoders x 2 terms -> 0.5 averaged).
        noise_range: r of the feature noise ``x + x U(-r, r)`` (``FeatureNoise(uniform_range=0.3)``).
        dropout: p of the dropout perturbation (``Dropout(x, p=0.3)``).
        drop_low / drop_high: range of the feature-dropout threshold factor (``np.random.uniform(0.7, 0.9)``).
    """

    consistency: float = 0.1
    rampup: float = 1.0
    sup_weight: float = 0.5
    noise_range: float = 0.3
    dropout: float = 0.3
    drop_low: float = 0.7
    drop_high: float = 0.9

    def __post_init__(self) -> None:
        for name in ("consistency", "rampup", "noise_range"):
            if getattr(self, name) < 0:
                raise ValueError(f"cct.{name} must be >= 0, got {getattr(self, name)}")
        if not self.sup_weight > 0:
            raise ValueError(f"cct.sup_weight must be > 0, got {self.sup_weight}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"cct.dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.drop_low <= self.drop_high:
            raise ValueError(
                f"cct.drop_low / cct.drop_high need 0 <= low <= high, got {self.drop_low}, {self.drop_high}"
            )


@register_method
class CCTMethod(MethodBase):
    """Main decoder (``student``) + auxiliary decoders on perturbed encoder maps (``aux_decoders``); MSE of each
    auxiliary softmax to the main decoder's detached softmax on unlabeled images."""

    name = "cct"
    config_class = CCTConfig
    description = "cross-consistency training: auxiliary decoders on perturbed encoder features match the main decoder"
    paper = "Ouali et al., Semi-Supervised Semantic Segmentation with Cross-Consistency Training, CVPR 2020"
    loss_names = ("loss_sup", "loss_cons")
    init_components = ("student",)
    segmenter = "student"
    spatial_dims = (2,)

    def __init__(self, cfg: CCTConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        branches = [DecoderBranch(build_backbone(model, num_classes, spatial_dims)[0]) for _ in range(3)]
        self.add_component("aux_decoders", nn.ModuleList(branches))
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def perturb(self, maps: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """The three perturbed copies of the encoder maps (noise, dropout, feature dropout), one per auxiliary
        decoder, each level perturbed independently."""
        cfg, g = self.cfg, self.generator
        return [
            [feature_noise(m, g, cfg.noise_range) for m in maps],
            [random_dropout(m, cfg.dropout, g) for m in maps],
            [feature_dropout(m, g, cfg.drop_low, cfg.drop_high) for m in maps],
        ]

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl = batch.image_l.shape[0]
        maps = self.student.encode(torch.cat([batch.image_l, batch.image_u]))
        main = self.student.decode(maps).logits
        aux = [dec(m).logits for dec, m in zip(self.aux_decoders, self.perturb(maps))]
        decoders = [main, *aux]
        loss_sup = sum(self.sup(d[:bl], batch.label_l) for d in decoders) / len(decoders)
        target = main[bl:].detach().float().softmax(dim=1)
        loss_cons = sum(((a[bl:].float().softmax(dim=1) - target) ** 2).mean() for a in aux) / len(aux)
        weight = rampup_weight(self.cfg.consistency, step, self.total_steps, self.cfg.rampup)
        loss = loss_sup + weight * loss_cons
        return StepOutput(loss, {"loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach()})
