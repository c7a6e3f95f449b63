"""ACTION: anatomical-aware contrastive distillation (You et al., IPMI 2023; the ARCO paper's reference [16]),
as the recipe ``action`` = ``arco-pretrain`` -> ``action-finetune`` (charlesyou999648/ACTION ``train_2D.sh``).

Pre-training is ARCO's stage 1 (the same relational instance discrimination against an EMA teacher over a
36-entry queue, temperatures 0.1 / 0.01). Fine-tuning (``train_2D_action.py``) differs from ARCO's stage 2 in
code, not only in parameters, so it is its own method here:

``L = 0.5 (CE + Dice)(labeled) + L_unsup + 0.01 * L_reco`` with
- ``L_unsup``: ReCo's confidence-weighted pseudo-label loss: per-pixel CE of the student on the strong view
  against the EMA teacher's pseudo-labels, each image weighted by its fraction of pixels with confidence >= 0.97,
  averaged over the pixels with a positive loss;
- ``L_reco``: ReCo's regional contrast with active sampling on the student's representations: for every class
  present (labeled pixels and unlabeled pixels of confidence >= 0.7), 256 *hard* queries (pixels whose student
  probability for their class is < 0.97), positive key = the class prototype (mean representation, detached), 512
  negatives per query whose classes are drawn with probability ``softmax(cos(proto_c, proto_j) / 0.5)`` over the
  other present classes, then a pixel of that class; logits ``cos / 0.5``; the sum over classes divided by the
  number of present classes;
- no nearest-neighbour term, no memory bank, no teacher representations (ARCO's ``L_nn``, bank and teacher keys).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from arco.augment import color_jitter, cutmix, gaussian_blur
from arco.losses import SupervisedLoss
from arco.methods import arco_pretrain  # noqa: F401 - registers arco-pretrain, stage 1 of the recipe below
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import RecipeStage, register_method, register_recipe
from arco.models import RepresentationHead
from arco.sampling import sample_per_class

__all__ = ["ActionFinetuneConfig", "ActionFinetuneMethod", "negative_classes", "reco_loss", "weighted_unsup_loss"]

_PAPER = (
    "You et al., Bootstrapping Semi-supervised Medical Image Segmentation with Anatomical-aware Contrastive "
    "Distillation, IPMI 2023"
)


@dataclass(frozen=True)
class ActionFinetuneConfig:
    """Fine-tuning parameters (``train_2D_action.py`` / ``train_2D.sh`` defaults).

    Attributes:
        num_queries / num_negatives: hard queries per class and negatives per query (256, 512).
        tau: temperature of the logits and of the negative-class distribution (``--temp 0.5``).
        strong_threshold: confidence of pseudo-labels that weight ``L_unsup``, and the student probability below
            which a pixel is a hard query (0.97).
        weak_threshold: confidence above which unlabeled pixels enter ``L_reco`` (0.7).
        lambda_contrast / lambda_unsup: weights of ``L_reco`` (``--k1 0.01``) and ``L_unsup`` (1).
        sup_weight: ``L_sup = sup_weight * (CE + Dice)`` (0.5).
        ema: teacher momentum (0.99).
        cutmix_p: probability that an unlabeled image gets a CutMix box (``--apply_aug cutmix``: always).
    """

    num_queries: int = 256
    num_negatives: int = 512
    tau: float = 0.5
    strong_threshold: float = 0.97
    weak_threshold: float = 0.7
    lambda_contrast: float = 0.01
    lambda_unsup: float = 1.0
    sup_weight: float = 0.5
    ema: float = 0.99
    cutmix_p: float = 1.0

    def __post_init__(self) -> None:
        if min(self.num_queries, self.num_negatives) < 1 or not self.tau > 0:
            raise ValueError(
                "action-finetune: num_queries, num_negatives must be >= 1 and tau > 0, got "
                f"{self.num_queries}, {self.num_negatives}, {self.tau}"
            )
        for key in ("strong_threshold", "weak_threshold", "ema", "cutmix_p"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"action-finetune.{key} must be in [0, 1], got {getattr(self, key)}")
        if self.lambda_contrast < 0 or self.lambda_unsup < 0 or not self.sup_weight > 0:
            raise ValueError("action-finetune: lambda_contrast, lambda_unsup must be >= 0 and sup_weight > 0")


def weighted_unsup_loss(
    logits: torch.Tensor, pseudo: torch.Tensor, confidence: torch.Tensor, threshold: float
) -> torch.Tensor:
    """ReCo / ACTION ``compute_unsupervised_loss``: ``mean_{pixels with CE > 0} w_b * CE`` with ``w_b`` the
    fraction of image ``b``'s pixels whose confidence is ``>= threshold``."""
    ce = F.cross_entropy(logits.float(), pseudo, reduction="none")
    weight = (confidence >= threshold).float().flatten(1).mean(1).view(-1, *([1] * (ce.dim() - 1)))
    counted = (ce > 0).float()
    return (weight * ce * counted).sum() / counted.sum().clamp_min(1.0)


def negative_classes(
    proto: torch.Tensor, present: torch.Tensor, num: int, tau: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """ReCo's active key sampling: for queries of each class ``c``, ``num`` negative classes drawn with probability
    ``softmax_j(cos(proto_c, proto_j) / tau)`` over the other present classes ``j`` (``(C, num)`` int64; rows of
    classes without another present class are arbitrary).

    Args:
        proto: ``(C, dim)`` unit-norm class prototypes. present: ``(C,)`` bool.
    """
    c = proto.shape[0]
    other = present[None, :] & ~torch.eye(c, dtype=torch.bool, device=proto.device)
    weight = torch.softmax((proto @ proto.t() / tau).masked_fill(~other, float("-inf")), dim=1).nan_to_num(0.0)
    cdf = weight.cumsum(1)
    u = torch.rand(c, num, generator=generator, device=proto.device)
    # Scaling by the row total keeps rounding from ever selecting a class past the last one with mass.
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_max(c - 1)


def reco_loss(
    label: torch.Tensor,
    valid: torch.Tensor,
    hard: torch.Tensor,
    rep: Callable[[torch.Tensor], torch.Tensor],
    num_classes: int,
    num_queries: int = 256,
    num_negatives: int = 512,
    tau: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ReCo's regional contrastive loss with active query and key sampling, vectorised over classes.

    Args:
        label: ``(B, *S)`` int64 (ground truth / pseudo-labels). valid: bool, pixels that may be used.
        hard: bool, pixels whose student probability for their label is below the strong threshold.
        rep: flat positions ``(N,)`` -> ``(N, dim)`` student representations (with grad).
        num_classes, num_queries, num_negatives, tau: as :class:`ActionFinetuneConfig`.
        generator: every random draw (on the label's device).

    Prototypes and negative keys come from ``num_negatives`` uniform draws of each class's valid pixels (all of
    them when the class has fewer): ReCo averages and draws over every valid pixel. Queries are drawn without
    replacement (ReCo: with replacement). Returns 0 when fewer than two classes are present.
    """
    c, q, p = num_classes, num_queries, num_negatives
    idx_q, ok_q = sample_per_class(label, c, q, "ns", valid=valid & hard, generator=generator)
    idx_k, ok_k = sample_per_class(label, c, p, "ns", valid=valid, generator=generator)
    feats = rep(torch.cat([idx_q.reshape(-1), idx_k.reshape(-1)])).float()
    query = F.normalize(feats[: c * q], dim=-1).view(c, q, -1)
    keys = feats[c * q :].detach().view(c, p, -1)
    count = ok_k.sum(1)  # valid draws come first in each row
    present = count > 0
    proto = (keys * ok_k.unsqueeze(-1)).sum(1) / count.clamp_min(1).unsqueeze(-1)
    proto_n, keys_n = F.normalize(proto, dim=-1), F.normalize(keys, dim=-1)
    cls = negative_classes(proto_n, present, q * num_negatives, tau, generator)  # (C, Q*N)
    u = torch.rand(c, q * num_negatives, generator=generator, device=label.device)
    pick = (u * count[cls]).long().minimum((count[cls] - 1).clamp_min(0))  # a valid draw of that class
    sim = torch.einsum("cqd,kd->cqk", query, keys_n.reshape(c * p, -1))  # cosine to every key, (C, Q, C*P)
    negatives = sim.gather(2, (cls * p + pick).view(c, q, num_negatives))
    positive = (query * proto_n.unsqueeze(1)).sum(-1, keepdim=True)
    logits = torch.cat([positive, negatives], dim=-1) / tau
    per_query = logits.logsumexp(-1) - logits[..., 0]
    okf = ok_q.float()
    per_class = (per_query * okf).sum(1) / okf.sum(1).clamp_min(1.0)
    use = (present & ok_q.any(1)).float()
    n_present = present.sum()
    return torch.where(n_present > 1, (per_class * use).sum() / n_present.clamp_min(1), per_class.sum() * 0.0)


@register_method
class ActionFinetuneMethod(MethodBase):
    """ACTION's fine-tuning: supervised + confidence-weighted pseudo-labels + ReCo regional contrast; predicts
    with the student (the ``model`` the code saves)."""

    name = "action-finetune"
    config_class = ActionFinetuneConfig
    description = "ACTION fine-tuning: L_sup + weighted pseudo-labels + ReCo regional contrast with active sampling"
    paper = _PAPER
    loss_names = ("loss_sup", "loss_unsup", "loss_contrast")
    metric_names = ("confident",)
    init_components = ("student", "teacher")
    segmenter = "student"
    needs_unlabeled = True
    spatial_dims = (2, 3)

    def __init__(self, cfg: ActionFinetuneConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        self.add_teacher("teacher", "student")
        head = RepresentationHead(self.student.feature_channels, model.dim, spatial_dims)
        self.add_component("rep_head", head)
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, g, bl = self.cfg, self.generator, batch.image_l.shape[0]
        with torch.no_grad():
            prob_t = torch.softmax(self.teacher(batch.image_u).logits.float(), dim=1)
            confidence, pseudo = prob_t.max(dim=1)
            image_s, pseudo_s, conf_s = cutmix(batch.image_u, pseudo, confidence, generator=g, p=cfg.cutmix_p)
            image_s = gaussian_blur(color_jitter(image_s, generator=g), generator=g)
        x = torch.cat([batch.image_l, image_s])
        out = self.student(x)
        loss_sup = self.sup(out.logits[:bl], batch.label_l)
        loss_unsup = weighted_unsup_loss(out.logits[bl:], pseudo_s, conf_s, cfg.strong_threshold)
        label = torch.cat([batch.label_l, pseudo_s])
        valid = torch.cat([torch.ones_like(batch.label_l, dtype=torch.bool), conf_s >= cfg.weak_threshold])
        with torch.no_grad():
            own = torch.softmax(out.logits.float(), dim=1).gather(1, label.unsqueeze(1)).squeeze(1)
        spatial, feats = tuple(x.shape[2:]), out.features

        def rep(index: torch.Tensor) -> torch.Tensor:
            return self.rep_head.forward_at(feats, index, spatial)

        loss_reco = reco_loss(
            label, valid, own < cfg.strong_threshold, rep, self.num_classes, cfg.num_queries, cfg.num_negatives,
            cfg.tau, g,
        )  # fmt: skip
        loss = loss_sup + cfg.lambda_unsup * loss_unsup + cfg.lambda_contrast * loss_reco
        logs = {
            "loss_sup": loss_sup.detach(),
            "loss_unsup": loss_unsup.detach(),
            "loss_contrast": loss_reco.detach(),
            "confident": (conf_s >= cfg.strong_threshold).float().mean(),
        }
        return StepOutput(loss, logs)

    def after_optimizer_step(self, step: int) -> None:
        self.update_teachers(self.cfg.ema)


register_recipe(
    "action",
    (RecipeStage("pretrain", "arco-pretrain", 0.5), RecipeStage("finetune", "action-finetune", 0.5)),
    "ACTION: relational instance-discrimination pre-training, then ReCo-style anatomical contrast fine-tuning",
    _PAPER,
)
