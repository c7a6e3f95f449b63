"""ARCO stage 1, ``arco-pretrain``: relational semi-supervised pre-training (paper App. E(1), docs/methods.md; the
reference code's ``code/pretrain_2D.py`` with ``ISD`` in ``code/model_2D.py``).

``L = L_sup + λ_inst (L_inst_global + L_inst_local)``. For every image of the batch, labeled and unlabeled alike
(the reference runs ``ISD`` on the whole batch), the student's embedding of one view and the EMA teacher's
embedding of another are compared with a FIFO queue of K = 36 teacher embeddings of earlier images; the student's
softmax over the cosine similarities (temperature τ_s) is pulled to the teacher's (τ_t) by KL divergence.

- global: the pooled bottleneck through the projector (and, for the student, the predictor);
- local: overlapping windows of the network's output *logits* (7 per axis, scaled to the patch), each
  average-pooled to a small grid and passed through 1x1 convolutions (``C -> 2C -> C``; the student also through
  ``C -> C -> C``), one queue per window position (:mod:`arco.models.windows`).

Temperatures: the paper's text gives τ_s = 0.1, τ_t = 0.01 (the defaults here); the reference's pre-training
script runs ``--T_s 0.1 --T_t 0.1``. Views: the reference gives the student the clean batch and the teacher a colour
jittered + noised one; here both unlabeled views are strong views (``strong_view``) and the teacher also sees a
strong view of the labeled images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from arco._checks import choice
from arco.losses import RelationalInstanceLoss
from arco.methods._arco_common import (
    PAPER,
    SHARED,
    STRONG_BN,
    STRONG_VIEWS,
    ArcoBase,
    check_common,
    pool,
    strong,
    student_forward,
)
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, ModelConfig, StepOutput
from arco.methods.registry import register_method
from arco.models.windows import WindowHead, logit_windows

__all__ = ["ArcoPretrainConfig", "ArcoPretrainMethod"]


@dataclass(frozen=True)
class ArcoPretrainConfig:
    """Stage 1 (paper App. E(1)).

    Attributes:
        queue_size: K mined views in the FIFO queue (paper: 36).
        tau_s / tau_t: student / teacher temperatures of the relation softmax (paper: 0.1 / 0.01; the reference
            script: 0.1 / 0.1).
        ema: teacher momentum (paper: 0.99).
        local_windows: windows of the logits per spatial axis for the local branch (reference: 7 at 256 px;
            window = ``2 * size // (local_windows + 1)``, spread evenly: :func:`arco.models.windows.logit_windows`).
        local_pool: each window is average-pooled to ``local_pool`` cells per axis (reference: 8).
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
    """

    queue_size: int = 36
    tau_s: float = 0.1
    tau_t: float = 0.01
    ema: float = 0.99
    local_windows: int = 7
    local_pool: int = 8
    lambda_inst: float = 1.0
    sup_weight: float = 1.0
    rampup: float = 0.0
    strong_bn: str = "clean"
    strong_view: str = "reference"
    jitter: float = 0.2

    def __post_init__(self) -> None:
        check_common("pretrain", self.ema, self.sup_weight, self.rampup)
        choice("pretrain.strong_bn", self.strong_bn, STRONG_BN)
        choice("pretrain.strong_view", self.strong_view, STRONG_VIEWS)
        if (
            self.queue_size < 1
            or self.local_windows < 1
            or self.local_pool < 1
            or self.tau_s <= 0
            or self.tau_t <= 0
            or self.lambda_inst < 0
        ):
            raise ValueError(
                "pretrain: queue_size and local_windows and local_pool must be >= 1, tau_s/tau_t > 0 and "
                f"lambda_inst >= 0; got {self.queue_size}, {self.local_windows}, {self.local_pool}, {self.tau_s}, "
                f"{self.tau_t}, {self.lambda_inst}"
            )


@register_method
class ArcoPretrainMethod(ArcoBase):
    """Stage 1: supervised loss + relational instance discrimination on global and local embeddings."""

    name = "arco-pretrain"
    config_class = ArcoPretrainConfig
    description = "ARCO stage 1: L_sup + relational instance discrimination (global + local) against an EMA teacher"
    paper = PAPER
    loss_names = ("loss_sup", "loss_inst", "loss_inst_global", "loss_inst_local")
    init_components = SHARED

    def __init__(self, cfg: ArcoPretrainConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        nonlinear = model.heads == "nonlinear"
        c = self.num_classes
        self.add_component("local_projector", WindowHead(c, 2 * c, nonlinear))
        self.add_component("local_predictor", WindowHead(c, c, nonlinear))
        self.add_teacher("teacher_local_projector", "local_projector")
        self.add_component(
            "inst_global", RelationalInstanceLoss(model.dim, cfg.queue_size, cfg.tau_s, cfg.tau_t, slots=1), "state"
        )
        slots, width = cfg.local_windows**spatial_dims, c * cfg.local_pool**spatial_dims
        self.add_component(
            "inst_local", RelationalInstanceLoss(width, cfg.queue_size, cfg.tau_s, cfg.tau_t, slots=slots), "state"
        )
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def local_embeddings(self, logits: torch.Tensor, teacher: bool) -> torch.Tensor:
        """``(B, W, C * P)``: the windows of ``logits`` through the teacher's projector, or the student's
        projector and predictor."""
        windows = logit_windows(logits.float(), self.cfg.local_windows, self.cfg.local_pool)
        if teacher:
            return self.teacher_local_projector(windows)
        return self.local_predictor(self.local_projector(windows, flatten=False))

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl = batch.image_l.shape[0]
        g, cfg = self.generator, self.cfg
        x1 = strong(batch.image_u, g, cfg.strong_view, cfg.jitter)
        x2 = strong(torch.cat([batch.image_l, batch.image_u]), g, cfg.strong_view, cfg.jitter)
        out = student_forward(self.student, batch.image_l, x1, cfg.strong_bn)
        loss_sup = self.sup(out.logits[:bl], batch.label_l)
        s_global = self.student_global(pool(out.bottleneck))
        s_local = self.local_embeddings(out.logits, teacher=False)
        with torch.no_grad():
            t_out = self.teacher(x2)
            t_global = self.teacher_projector(pool(t_out.bottleneck))
            t_local = self.local_embeddings(t_out.logits, teacher=True)
        loss_g = self.inst_global(s_global, t_global)
        loss_l = self.inst_local(s_local, t_local)
        self._pending = (t_global.detach(), t_local.detach())
        lam = rampup_weight(cfg.lambda_inst, step, self.total_steps, cfg.rampup)
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
