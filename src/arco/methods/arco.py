"""ARCO's two stages as two registered methods (SPEC §4-5, paper App. E).

- ``arco-pretrain`` (stage 1, relational semi-supervised pre-training):
  ``L = L_sup + L_inst_global + L_inst_local``.
- ``arco-finetune`` (stage 2, anatomical contrastive fine-tuning):
  ``L = L_sup + λ1·L_contrast + λ2·L_unsup + λ3·L_nn`` with λ = (0.01, 1, 1), plus the reference code's
  equivariance term ``λ_eqv·L_eqv`` that the paper does not mention (off by default, ``lambda_eqv``).

Both keep an EMA teacher (in eval mode) of the student and of the heads. Module names are shared between the
stages (``student``, ``teacher``, ``projector``, ``predictor``, ``teacher_projector``) so stage 2 starts from
stage 1's weights. The recipes ``arco`` (SG, the paper's best), ``arco-sag`` and ``arco-ns`` chain the two stages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from arco._checks import choice
from arco.augment import brightness_contrast, color_jitter, cutmix, gaussian_blur, random_similarity, warp
from arco.losses import (
    NearestNeighbourLoss,
    PixelContrastiveLoss,
    RelationalInstanceLoss,
    SupervisedLoss,
    unsup_loss,
)
from arco.losses.unsupervised import UNSUP_WEIGHTINGS
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import RecipeStage, register_method, register_recipe
from arco.models import PredictionHead, ProjectionHead, RepresentationHead, SegOutput, frozen_bn_stats
from arco.sampling import STRATEGIES

__all__ = ["ArcoPretrainConfig", "ArcoFinetuneConfig", "ArcoPretrainMethod", "ArcoFinetuneMethod"]


@dataclass(frozen=True)
class ArcoPretrainConfig:
    """Stage 1 (SPEC §4, App. E(1)).

    Attributes:
        queue_size: K mined views in the FIFO queue (paper: 36).
        tau_s / tau_t: student / teacher temperatures of the relation softmax (paper: 0.1 / 0.01).
        ema: teacher momentum (paper: 0.99).
        local_grid: local windows per spatial axis for the local branch (2 -> 2x2 in 2D, 2x2x2 in 3D).
        lambda_inst: weight of ``L_inst_global + L_inst_local`` (paper and reference code: 1).
        sup_weight: weight of ``L_sup = CE + Dice`` (reference code: 1, a plain sum).
        rampup: fraction of the stage over which ``lambda_inst`` ramps up from 0 with the sigmoid schedule of
            Laine & Aila (0 = constant weight, as the paper and the reference code).
        strong_bn: how the strongly augmented unlabeled batch meets BatchNorm: ``joint`` (one forward together
            with the labeled batch), ``separate`` (its own forward, as the reference code does) or ``clean`` (its own
            forward that does not update the running statistics used at evaluation; the default, measured best on
            validation). See docs/diagnosis.md.
        strong_view: the two views' photometric augmentation, one of :data:`STRONG_VIEWS` (reference code: jitter
            strength 0.2 and blur, each with p 0.5).
        jitter: brightness/contrast strength of the ``reference`` view (0.2 in the reference pre-training).
        head_rows: which rows the student's projector/predictor (BatchNorm1d) see: ``unlabeled`` (only the unlabeled
            embeddings the instance losses use, as the reference code) or ``all`` (the labeled ones too, outputs of
            the labeled rows discarded), so that BatchNorm does not normalise over as few as 2 rows. See
            docs/diagnosis.md section 9.
    """

    queue_size: int = 36
    tau_s: float = 0.1
    tau_t: float = 0.01
    ema: float = 0.99
    local_grid: int = 2
    lambda_inst: float = 1.0
    sup_weight: float = 1.0
    rampup: float = 0.0
    strong_bn: str = "clean"
    strong_view: str = "reference"
    jitter: float = 0.2
    head_rows: str = "unlabeled"

    def __post_init__(self) -> None:
        _check_common("pretrain", self.ema, self.sup_weight, self.rampup)
        choice("pretrain.head_rows", self.head_rows, HEAD_ROWS)
        choice("pretrain.strong_bn", self.strong_bn, STRONG_BN)
        choice("pretrain.strong_view", self.strong_view, STRONG_VIEWS)
        if self.queue_size < 1 or self.local_grid < 1 or self.tau_s <= 0 or self.tau_t <= 0 or self.lambda_inst < 0:
            raise ValueError(
                "pretrain: queue_size and local_grid must be >= 1, tau_s/tau_t > 0 and lambda_inst >= 0; got "
                f"{self.queue_size}, {self.local_grid}, {self.tau_s}, {self.tau_t}, {self.lambda_inst}"
            )


#: How a strongly augmented batch passes the student's BatchNorm layers (see ``_student_forward``).
STRONG_BN = ("joint", "separate", "clean")
#: Which rows the student's projector/predictor normalise over (see ``_heads_on``).
HEAD_ROWS = ("unlabeled", "all")


def _heads_on(heads: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, skip: int, mode: str) -> torch.Tensor:
    """``heads`` on ``rows[skip:]``: alone (``unlabeled``) or with the first ``skip`` rows in the same batch
    (``all``: their outputs discarded), which only changes the rows BatchNorm1d's statistics come from."""
    if mode == "all":
        return heads(rows)[skip:]
    return heads(rows[skip:])


def _check_common(stage: str, ema: float, sup_weight: float, rampup: float) -> None:
    if not 0 <= ema <= 1 or sup_weight <= 0 or not 0 <= rampup <= 1:
        raise ValueError(
            f"{stage}: ema must be in [0, 1], sup_weight > 0 and rampup in [0, 1]; got ema={ema}, "
            f"sup_weight={sup_weight}, rampup={rampup}"
        )


@dataclass(frozen=True)
class ArcoFinetuneConfig:
    """Stage 2 (SPEC §5, App. E(2)).

    Attributes:
        sampler: pixel sampler for queries and negatives: ``ns`` (MONA), ``sg`` (default) or ``sag``. (The
            reference code's list-position ``sg-ref``/``sag-ref`` exist in ``arco.sampling.sample`` for
            studies, not for training.)
        grid: sampler cells per spatial axis (4).
        num_queries: queries per class (256); num_negatives: negative keys per query (512).
        tau: contrastive temperature (0.5).
        lambda_contrast / lambda_unsup / lambda_nn: λ1, λ2, λ3 = 0.01, 1, 1 (the paper's grid search).
        confidence: pseudo-label confidence threshold (reference: 0.97).
        bank_size: per-class memory bank of teacher keys (device ring buffer).
        nn_bank / nn_k: bank of K = 36 pooled teacher embeddings and k = 5 neighbours for L_nn.
        ema: teacher momentum (0.99).
        cutmix_p: probability that an unlabeled image gets a CutMix box in the strong view (reference: 1).
        cutmix_area: range of the pasted box's area as a fraction of the image (reference: exactly 1/2).
        strong_view: photometric part of the strong view, one of :data:`STRONG_VIEWS`.
        jitter: brightness/contrast strength of the ``reference`` view (0.25 in the reference fine-tuning).
        unsup_weighting: ``mask`` (SPEC §5: CE on confident pixels only) or ``ratio`` (the reference code: CE on
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
        head_rows: ``unlabeled`` or ``all``, as in stage 1 (the projector/predictor feed L_nn).
    """

    sampler: str = "sg"
    grid: int = 4
    num_queries: int = 256
    num_negatives: int = 512
    tau: float = 0.5
    lambda_contrast: float = 0.01
    lambda_unsup: float = 1.0
    lambda_nn: float = 1.0
    confidence: float = 0.97
    bank_size: int = 2048
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
    head_rows: str = "unlabeled"

    def __post_init__(self) -> None:
        # Fail when the config is read, not at the first training step.
        choice("finetune.sampler", self.sampler, STRATEGIES)
        choice("finetune.head_rows", self.head_rows, HEAD_ROWS)
        choice("finetune.strong_bn", self.strong_bn, STRONG_BN)
        choice("finetune.strong_view", self.strong_view, STRONG_VIEWS)
        if not 0 < self.cutmix_area[0] <= self.cutmix_area[1] <= 1 or not 0 <= self.jitter < 1:
            raise ValueError(
                f"finetune: cutmix_area must be (low, high) with 0 < low <= high <= 1 and jitter in [0, 1); got "
                f"{list(self.cutmix_area)}, {self.jitter}"
            )
        choice("finetune.unsup_weighting", self.unsup_weighting, UNSUP_WEIGHTINGS)
        _check_common("finetune", self.ema, self.sup_weight, self.rampup)
        if (
            min(self.lambda_contrast, self.lambda_unsup, self.lambda_nn, self.lambda_eqv) < 0
            or not 0 <= self.cutmix_p <= 1
        ):
            raise ValueError("finetune: the lambdas must be >= 0 and cutmix_p in [0, 1]")
        if not 0 <= self.confidence <= 1.01 or not 0 <= self.eqv_confidence <= 1.01:
            raise ValueError(
                f"finetune: confidence and eqv_confidence must be in [0, 1]; got {self.confidence}, "
                f"{self.eqv_confidence}"
            )
        if self.tau <= 0 or self.nn_k > self.nn_bank:
            raise ValueError(
                f"finetune: tau must be > 0 and nn_k <= nn_bank; got {self.tau}, {self.nn_k} > {self.nn_bank}"
            )


def _pool(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).mean(dim=2)


#: The strongly augmented view's photometric part (CutMix is separate): ``reference`` = the ARCO / ReCo code's
#: (brightness/contrast factors in 1 ± strength with p 0.5, Gaussian blur sigma U(0.15, 1.15) px at 256 px with p 0.5,
#: scaled to the patch size), ``heavy`` = gamma + additive jitter (p 0.8) and blur sigma U(0.1, 2) px at any size
#: (arco 0.1's strong view), ``none``.
STRONG_VIEWS = ("reference", "heavy", "none")
_REFERENCE_SIZE = 256  # the reference code's ACDC slices: blur radii are in pixels of a 256 x 256 image


def _strong(x: torch.Tensor, generator: torch.Generator, view: str, strength: float) -> torch.Tensor:
    if view == "none":
        return x
    if view == "heavy":
        return gaussian_blur(color_jitter(x, generator=generator), generator=generator)
    scale = min(x.shape[2:]) / _REFERENCE_SIZE
    x = brightness_contrast(x, generator, strength=strength, p=0.5)
    return gaussian_blur(x, generator, sigma=(0.15 * scale, 1.15 * scale), p=0.5)


_SHARED = ("student", "teacher", "projector", "predictor", "teacher_projector")
_PAPER = (
    "You et al., Rethinking Semi-Supervised Medical Image Segmentation: A Variance-Reduction Perspective, NeurIPS 2023"
)


def _student_forward(student: nn.Module, x_l: torch.Tensor, x_s: torch.Tensor, mode: str) -> SegOutput:
    """The student on the labeled batch ``x_l`` and the strong unlabeled batch ``x_s``, outputs concatenated.

    ``joint``: one forward of both (batch statistics shared). ``separate``: two forwards (the reference code).
    ``clean``: two forwards, the strong one not updating BatchNorm's running statistics.
    """
    if mode == "joint":
        return student(torch.cat([x_l, x_s]))
    out_l = student(x_l)
    with frozen_bn_stats(student) if mode == "clean" else contextlib.nullcontext():
        out_s = student(x_s)
    return SegOutput(
        torch.cat([out_l.logits, out_s.logits]),
        [torch.cat([a, b]) for a, b in zip(out_l.features, out_s.features)],
        torch.cat([out_l.bottleneck, out_s.bottleneck]),
    )


class StrongViews(NamedTuple):
    """What stage 2 builds from an unlabeled batch before the student runs (``ArcoFinetuneMethod.strong_views``)."""

    image: torch.Tensor  # (B_u, C, *S) strong view
    pseudo: torch.Tensor  # (B_u, *S) teacher pseudo-labels, CutMix applied
    confidence: torch.Tensor  # (B_u, *S) teacher confidence, CutMix applied
    teacher_embed: torch.Tensor  # (B_u, dim) pooled teacher embedding of the weak view (L_nn bank)
    teacher_feats: list[torch.Tensor]  # teacher decoder features of cat(labeled, strong)
    mixed: torch.Tensor  # (B_u, C, *S) the CutMix image before the photometric part (the equivariance term's input)


class _ArcoBase(MethodBase):
    """Student/teacher backbones and the global projector/predictor shared by both stages."""

    def __init__(self, cfg, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.student = self.add_backbone("student")
        self.teacher = self.add_teacher("teacher", "student")
        self.projector = self.add_module(
            "projector", ProjectionHead(self.student.bottleneck_channels, model.hidden_dim, model.dim)
        )
        self.predictor_head = self.add_module("predictor", PredictionHead(model.dim, model.hidden_dim, model.dim))
        self.teacher_projector = self.add_teacher("teacher_projector", "projector")
        self.sup = SupervisedLoss(weight=cfg.sup_weight)  # CE + Dice, a plain sum in the reference code (SPEC §4)

    def student_global(self, pooled: torch.Tensor) -> torch.Tensor:
        """The student's global embedding of pooled bottleneck rows: projector, then predictor."""
        return self.predictor_head(self.projector(pooled))


@register_method
class ArcoPretrainMethod(_ArcoBase):
    """Stage 1: supervised loss + relational instance discrimination on global and local embeddings."""

    name = "arco-pretrain"
    config_class = ArcoPretrainConfig
    description = "ARCO stage 1: L_sup + relational instance discrimination (global + local) against an EMA teacher"
    paper = _PAPER
    loss_names = ("loss_sup", "loss_inst", "loss_inst_global", "loss_inst_local")
    init_modules = _SHARED

    def __init__(self, cfg: ArcoPretrainConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.slots = int(cfg.local_grid) ** spatial_dims
        fine = self.student.feature_channels[-1]
        self.local_projector = self.add_module("local_projector", ProjectionHead(fine, model.hidden_dim, model.dim))
        self.local_predictor = self.add_module(
            "local_predictor", PredictionHead(model.dim, model.hidden_dim, model.dim)
        )
        self.teacher_local_projector = self.add_teacher("teacher_local_projector", "local_projector")
        self.inst_global = self.add_module(
            "inst_global", RelationalInstanceLoss(model.dim, cfg.queue_size, cfg.tau_s, cfg.tau_t, slots=1), "state"
        )
        self.inst_local = self.add_module(
            "inst_local",
            RelationalInstanceLoss(model.dim, cfg.queue_size, cfg.tau_s, cfg.tau_t, slots=self.slots),
            "state",
        )
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def _windows(self, fine: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B * slots, C): mean of each local window of a local_grid^d grid."""
        g = int(self.cfg.local_grid)
        pool = F.adaptive_avg_pool2d if self.dims == 2 else F.adaptive_avg_pool3d
        w = pool(fine, g)
        return w.flatten(2).transpose(1, 2).reshape(-1, fine.shape[1])

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl, bu = batch.image_l.shape[0], batch.image_u.shape[0]
        g = self.generator
        cfg = self.cfg
        x1 = _strong(batch.image_u, g, cfg.strong_view, cfg.jitter)
        x2 = _strong(batch.image_u, g, cfg.strong_view, cfg.jitter)
        out = _student_forward(self.student, batch.image_l, x1, self.cfg.strong_bn)
        loss_sup = self.sup(out.logits[:bl], batch.label_l)
        rows = cfg.head_rows
        s_global = _heads_on(self.student_global, _pool(out.bottleneck), bl, rows)
        s_local = _heads_on(
            lambda z: self.local_predictor(self.local_projector(z)),
            self._windows(out.features[-1]),
            bl * self.slots,
            rows,
        )
        with torch.no_grad():
            t_out = self.teacher(x2)
            t_global = self.teacher_projector(_pool(t_out.bottleneck))
            t_local = self.teacher_local_projector(self._windows(t_out.features[-1]))
        s_local, t_local = s_local.view(bu, self.slots, -1), t_local.view(bu, self.slots, -1)
        loss_g = self.inst_global(s_global, t_global)
        loss_l = self.inst_local(s_local, t_local)
        self._pending = (t_global.detach(), t_local.detach())
        lam = rampup_weight(self.cfg.lambda_inst, step, self.total_steps, self.cfg.rampup)
        loss = loss_sup + lam * (loss_g + loss_l)
        logs = {
            "loss_sup": loss_sup.detach(),
            "loss_inst": (loss_g + loss_l).detach(),
            "loss_inst_global": loss_g.detach(),
            "loss_inst_local": loss_l.detach(),
        }
        return StepOutput(loss, logs)

    def after_optimizer_step(self, step: int) -> None:
        self.update_teachers(self.cfg.ema)
        if self._pending is not None:
            self.inst_global.enqueue(self._pending[0])
            self.inst_local.enqueue(self._pending[1])
            self._pending = None


@register_method
class ArcoFinetuneMethod(_ArcoBase):
    """Stage 2: supervised + pixel contrastive (sampled pixels only) + confident pseudo-labels + nearest
    neighbours."""

    name = "arco-finetune"
    config_class = ArcoFinetuneConfig
    description = "ARCO stage 2: L_sup + sampled pixel contrast (NS/SG/SAG) + pseudo-labels + nearest neighbours"
    paper = _PAPER
    loss_names = ("loss_sup", "loss_contrast", "loss_unsup", "loss_nn", "loss_eqv")
    metric_names = ("confident",)
    init_modules = _SHARED

    def __init__(self, cfg: ArcoFinetuneConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.rep_head = self.add_module(
            "rep_head", RepresentationHead(self.student.feature_channels, model.dim, spatial_dims)
        )
        self.teacher_rep_head = self.add_teacher("teacher_rep_head", "rep_head")
        self.contrast = self.add_module(
            "contrast",
            PixelContrastiveLoss(
                num_classes,
                model.dim,
                strategy=cfg.sampler,
                grid=cfg.grid,
                num_queries=cfg.num_queries,
                num_negatives=cfg.num_negatives,
                tau=cfg.tau,
                bank_size=cfg.bank_size,
            ),
            "state",
        )
        self.nn_loss = self.add_module(
            "nn_loss", NearestNeighbourLoss(model.dim, bank_size=cfg.nn_bank, k=cfg.nn_k), "state"
        )
        self._pending: torch.Tensor | None = None

    @torch.no_grad()
    def strong_views(self, batch: Batch, generator: torch.Generator) -> StrongViews:
        """The teacher's pseudo-labels on the weak unlabeled view, the strong view (CutMix applied to image,
        pseudo-label and confidence alike, then the photometric part) and the teacher's features on the labeled +
        strong batch: everything stage 2's losses compare the student with (also used by ``arco variance``)."""
        cfg, g = self.cfg, generator
        t_weak = self.teacher(batch.image_u)
        confidence, pseudo = torch.softmax(t_weak.logits.float(), dim=1).max(dim=1)
        t_embed = self.teacher_projector(_pool(t_weak.bottleneck))
        image_s, pseudo_s, conf_s = cutmix(
            batch.image_u, pseudo, confidence, generator=g, p=cfg.cutmix_p, area=cfg.cutmix_area
        )
        mixed = image_s
        image_s = _strong(mixed, g, cfg.strong_view, cfg.jitter)
        t_feats = self.teacher(torch.cat([batch.image_l, image_s])).features
        return StrongViews(image_s, pseudo_s, conf_s, t_embed, t_feats, mixed)

    def student_forward(self, image_l: torch.Tensor, image_s: torch.Tensor) -> SegOutput:
        """The student on the labeled and strong batches, as ``strong_bn`` says (see :func:`_student_forward`)."""
        return _student_forward(self.student, image_l, image_s, self.cfg.strong_bn)

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
        x = torch.cat([image_l, _strong(mixed, g, cfg.strong_view, cfg.jitter)])
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
        image_s, pseudo_s, conf_s, t_embed = views.image, views.pseudo, views.confidence, views.teacher_embed
        x = torch.cat([batch.image_l, image_s])
        out = self.student_forward(batch.image_l, image_s)
        logits_l, logits_u = out.logits[:bl], out.logits[bl:]
        loss_sup = self.sup(logits_l, batch.label_l)
        loss_unsup = unsup_loss(logits_u, pseudo_s, conf_s, threshold=cfg.confidence, weighting=cfg.unsup_weighting)

        label = torch.cat([batch.label_l, pseudo_s])
        valid = torch.cat([torch.ones_like(batch.label_l, dtype=torch.bool), conf_s >= cfg.confidence])
        spatial = tuple(x.shape[2:])
        s_feats, t_feats = out.features, views.teacher_feats

        def rep_student(index: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
            return self.rep_head.forward_at(s_feats, index, spatial, ok)

        def rep_teacher(index: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.teacher_rep_head.forward_at(t_feats, index, spatial, ok)

        loss_contrast = self.contrast(label, valid, rep_student, rep_teacher, g)
        s_embed = _heads_on(self.student_global, _pool(out.bottleneck), bl, cfg.head_rows)
        loss_nn = self.nn_loss(s_embed)
        self._pending = t_embed.detach()
        if cfg.lambda_eqv > 0:
            conf = torch.cat([torch.ones_like(batch.label_l, dtype=conf_s.dtype), conf_s])
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
            "confident": valid[bl:].float().mean(),
        }
        return StepOutput(loss, logs)

    def after_optimizer_step(self, step: int) -> None:
        self.update_teachers(self.cfg.ema)
        self.contrast.enqueue()
        if self._pending is not None:
            self.nn_loss.enqueue(self._pending)
            self._pending = None


_STAGES = ("pretrain", "arco-pretrain", 0.5), ("finetune", "arco-finetune", 0.5)
register_recipe(
    "arco", _STAGES, "ARCO-SG: stage 1 (arco-pretrain) then stage 2 (arco-finetune) with the SG sampler", _PAPER
)
for _sampler, _what in (("sag", "SAG (stratified-antithetic)"), ("ns", "NS (naive uniform, as MONA samples)")):
    register_recipe(
        f"arco-{_sampler}",
        (_STAGES[0], RecipeStage(*_STAGES[1], params={"sampler": _sampler})),
        f"ARCO with the {_what} sampler in stage 2",
        _PAPER,
    )
