"""ARCO's two stages as two registered methods (SPEC §4-5, paper App. E).

- ``arco-pretrain`` (stage 1, relational semi-supervised pre-training):
  ``L = L_sup + L_inst_global + L_inst_local``.
- ``arco-finetune`` (stage 2, anatomical contrastive fine-tuning):
  ``L = L_sup + λ1·L_contrast + λ2·L_unsup + λ3·L_nn`` with λ = (0.01, 1, 1).

Both keep an EMA teacher (in eval mode) of the student and of the heads. Module names are shared between the
stages (``student``, ``teacher``, ``projector``, ``predictor``, ``teacher_projector``) so stage 2 starts from
stage 1's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from arco._checks import choice
from arco.data.transforms import color_jitter, cutmix, gaussian_blur
from arco.losses import (
    NearestNeighbourLoss,
    PixelContrastiveLoss,
    RelationalInstanceLoss,
    SupervisedLoss,
    unsup_loss,
)
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput, build_backbone
from arco.models import PredictionHead, ProjectionHead, RepresentationHead, ema_update, make_teacher
from arco.sampling import STRATEGIES

__all__ = ["ArcoPretrainConfig", "ArcoFinetuneConfig", "ArcoPretrainMethod", "ArcoFinetuneMethod"]


@dataclass(frozen=True)
class ArcoPretrainConfig:
    """Stage 1 (SPEC §4, App. E(1)).

    Attributes:
        iterations: optimiser steps (reference code: 30 000).
        batch_labeled / batch_unlabeled: images per step (reference code: 3 + 3).
        queue_size: K mined views in the FIFO queue (paper: 36).
        tau_s / tau_t: student / teacher temperatures of the relation softmax (paper: 0.1 / 0.01).
        ema: teacher momentum (paper: 0.99).
        local_grid: local windows per spatial axis for the local branch (2 -> 2x2 in 2D, 2x2x2 in 3D).
        lambda_inst: weight of ``L_inst_global + L_inst_local`` (paper: 1; short CPU schedules use less so
            the instance terms do not swamp ``L_sup``).
    """

    iterations: int = 30000
    batch_labeled: int = 3
    batch_unlabeled: int = 3
    queue_size: int = 36
    tau_s: float = 0.1
    tau_t: float = 0.01
    ema: float = 0.99
    local_grid: int = 2
    lambda_inst: float = 1.0


@dataclass(frozen=True)
class ArcoFinetuneConfig:
    """Stage 2 (SPEC §5, App. E(2)).

    Attributes:
        iterations: optimiser steps (reference code: 30 000).
        batch_labeled / batch_unlabeled: images per step (paper: 4 + 4).
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
        cutmix_p: probability that an unlabeled image gets a CutMix box in the strong view.
    """

    iterations: int = 30000
    batch_labeled: int = 4
    batch_unlabeled: int = 4
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

    def __post_init__(self) -> None:
        # Fail when the config is read, not at the first training step.
        choice("finetune.sampler", self.sampler, STRATEGIES)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).mean(dim=2)


def _strong(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return gaussian_blur(color_jitter(x, generator=generator), generator=generator)


class _ArcoBase(MethodBase):
    """Student/teacher backbones and the global projector/predictor shared by both stages."""

    def __init__(self, num_classes: int, spatial_dims: int, model: ModelConfig, ema: float) -> None:
        super().__init__(num_classes, spatial_dims)
        self.ema = float(ema)
        self.student, self.predictor_spec = build_backbone(model, num_classes, spatial_dims)
        self.teacher = make_teacher(self.student)
        self.projector = ProjectionHead(self.student.bottleneck_channels, model.hidden_dim, model.dim)
        self.predictor_head = PredictionHead(model.dim, model.hidden_dim, model.dim)
        self.teacher_projector = make_teacher(self.projector)
        self.sup = SupervisedLoss()
        self._modules = {
            "student": self.student,
            "teacher": self.teacher,
            "projector": self.projector,
            "predictor": self.predictor_head,
            "teacher_projector": self.teacher_projector,
        }
        self._trainable = ["student", "projector", "predictor"]
        self._frozen = ["teacher", "teacher_projector"]
        self._ema_pairs = [("teacher", "student"), ("teacher_projector", "projector")]

    def _update_teachers(self) -> None:
        for t, s in self._ema_pairs:
            ema_update(self._modules[t], self._modules[s], self.ema)

    def predictor(self) -> nn.Module:
        return self.student


class ArcoPretrainMethod(_ArcoBase):
    """Stage 1: supervised loss + relational instance discrimination on global and local embeddings."""

    def __init__(self, cfg: ArcoPretrainConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(num_classes, spatial_dims, model, cfg.ema)
        self.cfg = cfg
        self.slots = int(cfg.local_grid) ** spatial_dims
        fine = self.student.feature_channels[-1]
        self.local_projector = ProjectionHead(fine, model.hidden_dim, model.dim)
        self.local_predictor = PredictionHead(model.dim, model.hidden_dim, model.dim)
        self.teacher_local_projector = make_teacher(self.local_projector)
        self.inst_global = RelationalInstanceLoss(model.dim, cfg.queue_size, cfg.tau_s, cfg.tau_t, slots=1)
        self.inst_local = RelationalInstanceLoss(model.dim, cfg.queue_size, cfg.tau_s, cfg.tau_t, slots=self.slots)
        self._modules.update(
            local_projector=self.local_projector,
            local_predictor=self.local_predictor,
            teacher_local_projector=self.teacher_local_projector,
            inst_global=self.inst_global,
            inst_local=self.inst_local,
        )
        self._trainable += ["local_projector", "local_predictor"]
        self._frozen += ["teacher_local_projector"]
        self._ema_pairs.append(("teacher_local_projector", "local_projector"))
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def _windows(self, fine: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B * slots, C): mean of each local window of a local_grid^d grid."""
        g = int(self.cfg.local_grid)
        pool = F.adaptive_avg_pool2d if self.spatial_dims == 2 else F.adaptive_avg_pool3d
        w = pool(fine, g)
        return w.flatten(2).transpose(1, 2).reshape(-1, fine.shape[1])

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl, bu = batch.image_l.shape[0], batch.image_u.shape[0]
        g = self.generator
        x1, x2 = _strong(batch.image_u, g), _strong(batch.image_u, g)
        out = self.student(torch.cat([batch.image_l, x1]))
        loss_sup = self.sup(out.logits[:bl], batch.label_l)
        s_global = self.predictor_head(self.projector(_pool(out.bottleneck[bl:])))
        s_local = self.local_predictor(self.local_projector(self._windows(out.features[-1][bl:])))
        with torch.no_grad():
            t_out = self.teacher(x2)
            t_global = self.teacher_projector(_pool(t_out.bottleneck))
            t_local = self.teacher_local_projector(self._windows(t_out.features[-1]))
        s_local, t_local = s_local.view(bu, self.slots, -1), t_local.view(bu, self.slots, -1)
        loss_g = self.inst_global(s_global, t_global)
        loss_l = self.inst_local(s_local, t_local)
        self._pending = (t_global.detach(), t_local.detach())
        loss = loss_sup + self.cfg.lambda_inst * (loss_g + loss_l)
        logs = {
            "loss_sup": loss_sup.detach(),
            "loss_inst": (loss_g + loss_l).detach(),
            "loss_inst_global": loss_g.detach(),
            "loss_inst_local": loss_l.detach(),
        }
        return StepOutput(loss, logs)

    def after_optimizer_step(self, step: int) -> None:
        self._update_teachers()
        if self._pending is not None:
            self.inst_global.enqueue(self._pending[0])
            self.inst_local.enqueue(self._pending[1])
            self._pending = None


class ArcoFinetuneMethod(_ArcoBase):
    """Stage 2: supervised + pixel contrastive (sampled pixels only) + confident pseudo-labels + nearest
    neighbours.
    """

    def __init__(self, cfg: ArcoFinetuneConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(num_classes, spatial_dims, model, cfg.ema)
        self.cfg = cfg
        self.rep_head = RepresentationHead(self.student.feature_channels, model.dim, spatial_dims)
        self.teacher_rep_head = make_teacher(self.rep_head)
        self.contrast = PixelContrastiveLoss(
            num_classes,
            model.dim,
            strategy=cfg.sampler,
            grid=cfg.grid,
            num_queries=cfg.num_queries,
            num_negatives=cfg.num_negatives,
            tau=cfg.tau,
            bank_size=cfg.bank_size,
        )
        self.nn_loss = NearestNeighbourLoss(model.dim, bank_size=cfg.nn_bank, k=cfg.nn_k)
        self._modules.update(
            rep_head=self.rep_head,
            teacher_rep_head=self.teacher_rep_head,
            contrast=self.contrast,
            nn_loss=self.nn_loss,
        )
        self._trainable += ["rep_head"]
        self._frozen += ["teacher_rep_head"]
        self._ema_pairs.append(("teacher_rep_head", "rep_head"))
        self._pending: torch.Tensor | None = None

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, g = self.cfg, self.generator
        bl = batch.image_l.shape[0]
        with torch.no_grad():
            t_weak = self.teacher(batch.image_u)
            prob = torch.softmax(t_weak.logits.float(), dim=1)
            confidence, pseudo = prob.max(dim=1)
            t_embed = self.teacher_projector(_pool(t_weak.bottleneck))
            image_s, pseudo_s, conf_s = cutmix(batch.image_u, pseudo, confidence, generator=g, p=cfg.cutmix_p)
            image_s = _strong(image_s, g)
            x = torch.cat([batch.image_l, image_s])
            t_all = self.teacher(x)
        out = self.student(x)
        logits_l, logits_u = out.logits[:bl], out.logits[bl:]
        loss_sup = self.sup(logits_l, batch.label_l)
        loss_unsup = unsup_loss(logits_u, pseudo_s, conf_s, threshold=cfg.confidence)

        label = torch.cat([batch.label_l, pseudo_s])
        valid = torch.cat([torch.ones_like(batch.label_l, dtype=torch.bool), conf_s >= cfg.confidence])
        spatial = tuple(x.shape[2:])
        s_feats, t_feats = out.features, t_all.features

        def rep_student(index: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
            return self.rep_head.forward_at(s_feats, index, spatial, ok)

        def rep_teacher(index: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self.teacher_rep_head.forward_at(t_feats, index, spatial, ok)

        loss_contrast = self.contrast(label, valid, rep_student, rep_teacher, g)
        s_embed = self.predictor_head(self.projector(_pool(out.bottleneck[bl:])))
        loss_nn = self.nn_loss(s_embed)
        self._pending = t_embed.detach()
        loss = loss_sup + cfg.lambda_contrast * loss_contrast + cfg.lambda_unsup * loss_unsup + cfg.lambda_nn * loss_nn
        logs = {
            "loss_sup": loss_sup.detach(),
            "loss_contrast": loss_contrast.detach(),
            "loss_unsup": loss_unsup.detach(),
            "loss_nn": loss_nn.detach(),
            "confident": valid[bl:].float().mean(),
        }
        return StepOutput(loss, logs)

    def after_optimizer_step(self, step: int) -> None:
        self._update_teachers()
        self.contrast.enqueue()
        if self._pending is not None:
            self.nn_loss.enqueue(self._pending)
            self._pending = None
