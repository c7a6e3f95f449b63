"""ARCO stage 2, ``arco-finetune``: anatomical contrastive fine-tuning (paper App. E(2), docs/methods.md; the reference
code's ``code/train_arco_2d.py``), and the recipes ``arco`` (SG, the paper's best), ``arco-sag`` and ``arco-ns``
that chain stage 1 (``arco_pretrain.py``) and stage 2.

``L = L_sup + λ1·L_contrast + λ2·L_unsup + λ3·L_nn`` with λ = (0.01, 1, 1), plus the reference code's equivariance
term ``λ_eqv·L_eqv`` that the paper does not mention (off by default).

- Representation (:mod:`arco.models.fused`): the five feature levels fused to ``model.dim`` channels by the
  reference's ``FeatureExtractor``; the student's through two bias-free linear maps, the teacher's (an EMA copy)
  without. No BatchNorm.
- ``L_contrast`` (``contrast``): ``reference`` (:class:`arco.losses.hard_negative.HardNegativeContrastiveLoss`, the
  reference code's ``compute_contra_memobank_loss``: entropy-percentile anchors, the class mean over every
  candidate as the positive, hard negatives from per-class FIFO banks, the sampler on anchors and negatives), or
  ``batch`` (:class:`arco.losses.contrastive.PixelContrastiveLoss`, arco 0.1's loss: confident pixels as queries,
  the mean of the drawn keys as the positive, uniform negatives among the other classes' keys and a small bank).
- ``L_unsup``: the student's cross-entropy on the strong view against the teacher's pseudo-labels (confident
  pixels); ``L_nn``: nearest neighbours of the student's global embedding in a bank of 36 teacher embeddings.

Both stages keep EMA teachers (in eval mode). Module names are shared between the stages (``student``,
``teacher``, ``projector``, ``global_predictor``, ``teacher_projector``) so stage 2 starts from stage 1's weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from arco._checks import choice
from arco.augment import cutmix, random_similarity, warp
from arco.losses import NearestNeighbourLoss, PixelContrastiveLoss, unsup_loss
from arco.losses.frameworks import NAMES as FRAMEWORK_NAMES
from arco.losses.frameworks import FrameworkOptions, PixelFramework, build_framework
from arco.losses.hard_negative import RULES, HardNegativeContrastiveLoss, expand_capacities
from arco.losses.unsupervised import UNSUP_WEIGHTINGS
from arco.methods._arco_common import (
    PAPER,
    SHARED,
    STRONG_BN,
    STRONG_VIEWS,
    ArcoBase,
    check_common,
    levels,
    pool,
    strong,
    student_forward,
)
from arco.methods._common import rampup_weight
from arco.methods.arco_pretrain import ArcoPretrainConfig, ArcoPretrainMethod
from arco.methods.base import Batch, ModelConfig, StepOutput
from arco.methods.registry import RecipeStage, register_method, register_recipe
from arco.models import SegOutput, frozen_bn_stats
from arco.models.fused import FusedRepresentation, LinearPair
from arco.sampling import STRATEGIES

__all__ = [
    "ArcoPretrainConfig",
    "ArcoFinetuneConfig",
    "ArcoPretrainMethod",
    "ArcoFinetuneMethod",
    "CONTRASTS",
    "FRAMEWORKS",
    "StrongViews",
]

#: The two L_contrast of stage 2 (module docstring).
CONTRASTS = ("reference", "batch")
#: ``finetune.framework``: ARCO's own L_contrast (``arco``, as ``contrast`` says) or a pixel-level self-supervised
#: framework on the sampled pixels (:mod:`arco.losses.frameworks`; paper Sec. 1 / App. L).
FRAMEWORKS = ("arco", *FRAMEWORK_NAMES)
_BATCH_BANK = 2048  # the ``batch`` loss's per-class bank when ``bank_size`` is not set


@dataclass(frozen=True)
class ArcoFinetuneConfig:
    """Stage 2 (paper App. E(2)).

    Attributes:
        contrast: ``reference`` or ``batch`` (module docstring).
        sampler: pixel sampler ``ns`` (MONA), ``sg`` (default) or ``sag``; with ``reference`` it draws the anchors
            and the negatives from the banks (:mod:`arco.sampling.bank`), with ``batch`` the queries.
        grid: sampler cells per spatial axis (4). bank_blocks: the bank sampler's strata (16, the reference's 4x4).
        num_queries: anchors per class (256); num_negatives: negative keys per anchor (512).
        tau: contrastive temperature (0.5).
        contrast_rule: ``literal`` or ``intended`` negative masks and class matching of the ``reference`` loss
            (:mod:`arco.losses.hard_negative`).
        delta_p / delta_n: the teacher probability above which a candidate is an anchor (0.3) and below which a
            pixel may be a negative (the reference's ``strong_threshold_u2pl`` 0.97).
        neg_ranks: the rank window ``[low, high)`` of the negative rule (3, 20).
        alpha0: the entropy percentile at the start, ``α_t = alpha0 (1 - t/T)`` (20 %).
        bank_size: keys per class: an int, or a list whose last entry repeats; ``None`` = the loss's default
            (``reference``: 50 000 for background, 30 000 for the others, as the reference; ``batch``: 2 048).
        lambda_contrast / lambda_unsup / lambda_nn: λ1, λ2, λ3 = 0.01, 1, 1 (the paper's grid search).
        confidence: pseudo-label confidence threshold of ``L_unsup`` (and of the ``batch`` loss's queries;
            reference: 0.97).
        nn_bank / nn_k: bank of K = 36 pooled teacher embeddings and k = 5 neighbours for L_nn.
        ema: teacher momentum (0.99).
        cutmix_p: probability that an unlabeled image gets a CutMix box in the strong view (reference: 1).
        cutmix_area: range of the pasted box's area as a fraction of the image (reference: exactly 1/2).
        strong_view: photometric part of the strong view, one of :data:`STRONG_VIEWS`.
        jitter: brightness/contrast strength of the ``reference`` view (0.25 in the reference fine-tuning).
        unsup_weighting: ``mask`` (the paper: CE on confident pixels only) or ``ratio`` (the reference code: CE on
            every pixel, weighted per image by its fraction of confident pixels); see :func:`arco.losses.unsup_loss`.
        sup_weight: weight of ``L_sup = CE + Dice`` (reference code: 1).
        rampup: fraction of the stage over which lambda_contrast, lambda_unsup and lambda_nn ramp up from 0
            (sigmoid, Laine & Aila); 0 = constant weights, as the paper and the reference code.
        strong_bn: ``joint``, ``separate`` or ``clean``, as in stage 1.
        lambda_eqv: weight of the reference code's equivariance term ``L_eqv`` (its ``k2`` = 1; the paper has no such
            term, so 0 here): the student's prediction on a randomly rotated / zoomed / shifted / mirrored copy of
            the labeled and (freshly jittered) strong images must match the same warp of its own detached prediction
            on the unwarped images (KL), on foreground pixels whose label or pseudo-label confidence is at least
            ``eqv_confidence`` (the reference's ``weak_threshold`` 0.7). See docs/diagnosis.md.
        eqv_confidence: that confidence threshold.
        eqv_rotate: the warps' maximal rotation in degrees (reference: 60).
        framework: ``arco`` (the L_contrast above) or one of ``simclr``, ``moco``, ``byol``, ``isd``, ``vicreg``:
            that framework's dense objective replaces L_contrast (weight ``lambda_contrast``) on pixels drawn by
            ``sampler`` (``num_queries`` per class; ``num_negatives`` queue keys per pixel for MoCo and ISD);
            ``contrast``, ``contrast_rule``, the deltas, ``neg_ranks``, ``alpha0`` and ``bank_size`` then do not
            apply. See :mod:`arco.losses.frameworks`.
        framework_tau / framework_tau_teacher / framework_queue / framework_weights: the framework's temperature
            (SimCLR 0.1, MoCo 0.2, ISD student 0.1), ISD's teacher temperature (0.01), the queue size (MoCo
            65 536, ISD 128 000) and VICReg's (λ, μ, ν) (25, 25, 1); ``None`` = those defaults.
    """

    contrast: str = "reference"
    sampler: str = "sg"
    grid: int = 4
    bank_blocks: int = 16
    num_queries: int = 256
    num_negatives: int = 512
    tau: float = 0.5
    contrast_rule: str = "intended"
    delta_p: float = 0.3
    delta_n: float = 0.97
    neg_ranks: tuple[int, int] = (3, 20)
    alpha0: float = 20.0
    bank_size: int | tuple[int, ...] | None = None
    lambda_contrast: float = 0.01
    lambda_unsup: float = 1.0
    lambda_nn: float = 1.0
    confidence: float = 0.97
    nn_bank: int = 36
    nn_k: int = 5
    ema: float = 0.99
    cutmix_p: float = 1.0
    cutmix_area: tuple[float, float] = (0.5, 0.5)
    strong_view: str = "reference"
    jitter: float = 0.25
    unsup_weighting: str = "mask"
    sup_weight: float = 1.0
    rampup: float = 0.0
    strong_bn: str = "clean"
    lambda_eqv: float = 0.0
    eqv_confidence: float = 0.7
    eqv_rotate: float = 60.0
    framework: str = "arco"
    framework_tau: float | None = None
    framework_tau_teacher: float | None = None
    framework_queue: int | None = None
    framework_weights: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        # Fail when the config is read, not at the first training step.
        choice("finetune.contrast", self.contrast, CONTRASTS)
        choice("finetune.framework", self.framework, FRAMEWORKS)
        self.framework_options()  # checks the framework_* values
        choice("finetune.sampler", self.sampler, STRATEGIES)
        choice("finetune.contrast_rule", self.contrast_rule, RULES)
        choice("finetune.strong_bn", self.strong_bn, STRONG_BN)
        choice("finetune.strong_view", self.strong_view, STRONG_VIEWS)
        choice("finetune.unsup_weighting", self.unsup_weighting, UNSUP_WEIGHTINGS)
        check_common("finetune", self.ema, self.sup_weight, self.rampup)
        if not 0 < self.cutmix_area[0] <= self.cutmix_area[1] <= 1 or not 0 <= self.jitter < 1:
            raise ValueError(
                f"finetune: cutmix_area must be (low, high) with 0 < low <= high <= 1 and jitter in [0, 1); got "
                f"{list(self.cutmix_area)}, {self.jitter}"
            )
        lambdas = (self.lambda_contrast, self.lambda_unsup, self.lambda_nn, self.lambda_eqv)
        if min(lambdas) < 0 or not 0 <= self.cutmix_p <= 1:
            raise ValueError("finetune: the lambdas must be >= 0 and cutmix_p in [0, 1]")
        probs = (self.confidence, self.eqv_confidence, self.delta_p, self.delta_n)
        if not all(0 <= p <= 1.01 for p in probs) or not 0 <= self.alpha0 <= 50:
            raise ValueError(
                "finetune: confidence, eqv_confidence, delta_p and delta_n must be in [0, 1] and alpha0 in [0, 50]; "
                f"got {self.confidence}, {self.eqv_confidence}, {self.delta_p}, {self.delta_n}, {self.alpha0}"
            )
        if self.tau <= 0 or self.nn_k > self.nn_bank or min(self.grid, self.bank_blocks) < 1:
            raise ValueError(
                f"finetune: tau must be > 0, nn_k <= nn_bank, grid and bank_blocks >= 1; got {self.tau}, "
                f"{self.nn_k} > {self.nn_bank}, {self.grid}, {self.bank_blocks}"
            )
        low, high = self.neg_ranks
        sizes = [self.bank_size] if isinstance(self.bank_size, int) else list(self.bank_size or [1])
        if not 0 <= low < high or min(sizes) < 1:
            raise ValueError(
                f"finetune: neg_ranks must be [low, high) with 0 <= low < high and bank_size >= 1; got "
                f"{list(self.neg_ranks)}, {self.bank_size}"
            )

    def framework_options(self) -> FrameworkOptions:
        """The ``framework_*`` settings (``None`` = the framework's default)."""
        try:
            return FrameworkOptions(
                self.framework_tau, self.framework_tau_teacher, self.framework_queue, self.framework_weights
            )
        except ValueError as exc:
            raise ValueError(f"finetune: {exc} (finetune.framework_*)") from exc


class StrongViews(NamedTuple):
    """What stage 2 builds from an unlabeled batch before the student runs (``ArcoFinetuneMethod.strong_views``)."""

    image: torch.Tensor  # (B_u, C, *S) strong view
    pseudo: torch.Tensor  # (B_u, *S) teacher pseudo-labels, CutMix applied
    confidence: torch.Tensor  # (B_u, *S) teacher confidence, CutMix applied
    teacher_embed: torch.Tensor  # (B_u, dim) pooled teacher embedding of the weak view (L_nn bank)
    teacher_levels: list[torch.Tensor]  # the teacher's five feature levels on cat(labeled, strong)
    teacher_prob: torch.Tensor  # (B_l + B_u, C, *S) the teacher's probabilities on cat(labeled, strong)
    mixed: torch.Tensor  # (B_u, C, *S) the CutMix image before the photometric part (the equivariance term's input)


@register_method
class ArcoFinetuneMethod(ArcoBase):
    """Stage 2: supervised + pixel contrastive (sampled pixels) + confident pseudo-labels + nearest neighbours."""

    name = "arco-finetune"
    config_class = ArcoFinetuneConfig
    description = "ARCO stage 2: L_sup + pixel contrast with NS/SG/SAG sampling + pseudo-labels + nearest neighbours"
    paper = PAPER
    loss_names = ("loss_sup", "loss_contrast", "loss_unsup", "loss_nn", "loss_eqv")
    metric_names = ("confident",)
    init_components = SHARED

    def __init__(self, cfg: ArcoFinetuneConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        channels = [self.student.bottleneck_channels, *self.student.feature_channels]
        self.add_component("rep_head", FusedRepresentation(channels, model.dim, spatial_dims))
        self.add_teacher("teacher_rep_head", "rep_head")
        self.add_component("rep_pair", LinearPair(model.dim))
        self.add_component("contrast", self._build_contrast(cfg, num_classes, model.dim), "state")
        head = self.contrast.build_head(model.dim, model.hidden_dim) if cfg.framework != "arco" else None
        if head is not None:  # BYOL's / ISD's predictor: a component only for the frameworks that have one
            self.add_component("contrast_head", head)
        self.add_component("nn_loss", NearestNeighbourLoss(model.dim, bank_size=cfg.nn_bank, k=cfg.nn_k), "state")
        self._pending: torch.Tensor | None = None

    @staticmethod
    def _build_contrast(cfg: ArcoFinetuneConfig, num_classes: int, dim: int) -> torch.nn.Module:
        if cfg.framework != "arco":
            return build_framework(
                cfg.framework, num_classes=num_classes, dim=dim, strategy=cfg.sampler, grid=cfg.grid,
                bank_blocks=cfg.bank_blocks, num_queries=cfg.num_queries, num_negatives=cfg.num_negatives,
                options=cfg.framework_options(),
            )  # fmt: skip
        common = dict(strategy=cfg.sampler, grid=cfg.grid, num_queries=cfg.num_queries, tau=cfg.tau)
        if cfg.contrast == "batch":
            bank = max(expand_capacities(cfg.bank_size, num_classes)) if cfg.bank_size else _BATCH_BANK
            return PixelContrastiveLoss(num_classes, dim, num_negatives=cfg.num_negatives, bank_size=bank, **common)
        return HardNegativeContrastiveLoss(
            num_classes,
            dim,
            bank_blocks=cfg.bank_blocks,
            num_negatives=cfg.num_negatives,
            capacities=cfg.bank_size or (50000, 30000),
            rule=cfg.contrast_rule,
            delta_p=cfg.delta_p,
            delta_n=cfg.delta_n,
            ranks=tuple(cfg.neg_ranks),
            alpha0=cfg.alpha0,
            **common,
        )

    @torch.no_grad()
    def strong_views(self, batch: Batch, generator: torch.Generator) -> StrongViews:
        """The teacher's pseudo-labels on the weak unlabeled view, the strong view (CutMix applied to image,
        pseudo-label and confidence alike, then the photometric part) and the teacher's outputs on the labeled +
        strong batch: everything stage 2's losses compare the student with (also used by ``arco variance``)."""
        cfg, g = self.cfg, generator
        t_weak = self.teacher(batch.image_u)
        confidence, pseudo = torch.softmax(t_weak.logits.float(), dim=1).max(dim=1)
        t_embed = self.teacher_projector(pool(t_weak.bottleneck))
        image_s, pseudo_s, conf_s = cutmix(
            batch.image_u, pseudo, confidence, generator=g, p=cfg.cutmix_p, area=cfg.cutmix_area
        )
        mixed = image_s
        image_s = strong(mixed, g, cfg.strong_view, cfg.jitter)
        t_out = self.teacher(torch.cat([batch.image_l, image_s]))
        prob = torch.softmax(t_out.logits.float(), dim=1)
        return StrongViews(image_s, pseudo_s, conf_s, t_embed, levels(t_out), prob, mixed)

    def student_forward(self, image_l: torch.Tensor, image_s: torch.Tensor) -> SegOutput:
        """The student on the labeled and strong batches, as ``strong_bn`` says (see :func:`student_forward`)."""
        return student_forward(self.student, image_l, image_s, self.cfg.strong_bn)

    def contrast_loss(
        self,
        views: StrongViews,
        out: SegOutput,
        label_l: torch.Tensor,
        step: int,
        generator: torch.Generator,
        update: bool = True,
        strategy: str | None = None,
    ) -> torch.Tensor:
        """L_contrast of one batch: the student's representation ``out`` of cat(labeled, strong) against the
        teacher's in ``views``. ``update=False`` leaves the banks as they are and ``strategy`` overrides the sampler
        (``arco variance``, ``arco landscape``)."""
        cfg, bl = self.cfg, label_l.shape[0]
        label = torch.cat([label_l, views.pseudo])
        s_levels = levels(out)

        def rep_student(index: torch.Tensor) -> torch.Tensor:
            return self.rep_pair(self.rep_head.forward_at(s_levels, index))

        def rep_teacher(index: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.teacher_rep_head.forward_at(views.teacher_levels, index)

        if isinstance(self.contrast, PixelFramework):  # finetune.framework other than arco
            return self.contrast(label, rep_student, rep_teacher, generator, update, strategy, self.framework_head())
        if cfg.contrast == "reference":
            with torch.no_grad():
                prob_s = torch.softmax(out.logits[bl:].detach().float(), dim=1)
                entropy = -(prob_s * (prob_s + 1e-10).log()).sum(1)
                teacher_map = self.teacher_rep_head.dense(views.teacher_levels)
            progress = step / self.total_steps
            return self.contrast(
                label, bl, views.teacher_prob, entropy, progress, teacher_map, rep_student, generator, update, strategy
            )  # fmt: skip
        valid = torch.cat([torch.ones_like(label_l, dtype=torch.bool), views.confidence >= cfg.confidence])
        return self.contrast(label, valid, rep_student, rep_teacher, generator, strategy=strategy, store=update)

    def framework_head(self) -> nn.Module | None:
        """BYOL's / ISD's predictor (component ``contrast_head``, or its DDP replica); None for the other frameworks."""
        return getattr(self, "contrast_head", None)

    def equivariance_loss(
        self, image_l: torch.Tensor, mixed: torch.Tensor, logits: torch.Tensor, label: torch.Tensor, conf: torch.Tensor
    ) -> torch.Tensor:
        """The reference code's ``loss_eqv``: KL(warp(p) || p_student(warp(x))) on confident foreground pixels.

        ``x`` is the labeled batch and a fresh photometric draw of the CutMix images ``mixed``; ``logits`` are the
        student's on the unwarped labeled + strong batch (detached: the target), ``label``/``conf`` their labels or
        pseudo-labels and confidences (1 on labeled pixels). One random similarity per image (rotation ±``eqv_rotate``
        degrees, zoom 0.8-1.2, shift 0.1, mirror); the warped forward follows ``strong_bn`` like the strong one.
        """
        cfg, g = self.cfg, self.generator
        x = torch.cat([image_l, strong(mixed, g, cfg.strong_view, cfg.jitter)])
        theta = random_similarity(x.shape[0], self.dims, g, x.device, rotate=cfg.eqv_rotate)
        with frozen_bn_stats(self.student) if cfg.strong_bn == "clean" else contextlib.nullcontext():
            pred = self.student(warp(x, theta)).logits.float()
        target = torch.softmax(warp(logits.detach().float(), theta), dim=1)
        mask = warp(((label != 0) & (conf >= cfg.eqv_confidence)).unsqueeze(1).float(), theta)
        kl = (target * (target.clamp_min(1e-12).log() - F.log_softmax(pred, dim=1))).sum(1, keepdim=True)
        per_image = (kl * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) + 1e-7)
        return per_image.mean()

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, g = self.cfg, self.generator
        bl = batch.image_l.shape[0]
        views = self.strong_views(batch, g)
        out = self.student_forward(batch.image_l, views.image)
        logits_l, logits_u = out.logits[:bl], out.logits[bl:]
        loss_sup = self.sup(logits_l, batch.label_l)
        loss_unsup = unsup_loss(
            logits_u, views.pseudo, views.confidence, threshold=cfg.confidence, weighting=cfg.unsup_weighting
        )
        loss_contrast = self.contrast_loss(views, out, batch.label_l, step, g)
        loss_nn = self.nn_loss(self.student_global(pool(out.bottleneck[bl:])))
        self._pending = views.teacher_embed.detach()
        if cfg.lambda_eqv > 0:
            label = torch.cat([batch.label_l, views.pseudo])
            conf = torch.cat([torch.ones_like(batch.label_l, dtype=views.confidence.dtype), views.confidence])
            loss_eqv = self.equivariance_loss(batch.image_l, views.mixed, out.logits, label, conf)
        else:
            loss_eqv = loss_sup.new_zeros(())
        ramp = rampup_weight(1.0, step, self.total_steps, cfg.rampup)
        aux = cfg.lambda_contrast * loss_contrast + cfg.lambda_unsup * loss_unsup + cfg.lambda_nn * loss_nn
        loss = loss_sup + ramp * (aux + cfg.lambda_eqv * loss_eqv)
        logs = {
            "loss_sup": loss_sup.detach(),
            "loss_contrast": loss_contrast.detach(),
            "loss_unsup": loss_unsup.detach(),
            "loss_nn": loss_nn.detach(),
            "loss_eqv": loss_eqv.detach(),
            "confident": (views.confidence >= cfg.confidence).float().mean(),
        }
        return StepOutput(loss, logs)

    def after_optimizer_step(self, step: int) -> None:
        self.update_teachers(self.cfg.ema)
        if isinstance(self.contrast, PixelContrastiveLoss):
            self.contrast.enqueue()
        if self._pending is not None:
            self.nn_loss.enqueue(self._pending)
            self._pending = None


_STAGES = ("pretrain", "arco-pretrain", 0.5), ("finetune", "arco-finetune", 0.5)
register_recipe(
    "arco", _STAGES, "ARCO-SG: stage 1 (arco-pretrain) then stage 2 (arco-finetune) with the SG sampler", PAPER
)
for _sampler, _what in (("sag", "SAG (stratified-antithetic)"), ("ns", "NS (naive uniform, as MONA samples)")):
    register_recipe(
        f"arco-{_sampler}",
        (_STAGES[0], RecipeStage(*_STAGES[1], params={"sampler": _sampler})),
        f"ARCO with the {_what} sampler in stage 2",
        PAPER,
    )
