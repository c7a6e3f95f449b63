"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) as trained by SSL4MIS ``train_mean_teacher_2D/3D.py``.

``L = 0.5·(CE + Dice)(student(x_l), y_l) + w(t)·mean((softmax(student(x_u)) - softmax(teacher(x_u + n)))^2)``

with ``n = clamp(0.1·N(0, 1), -0.2, 0.2)`` input noise on the teacher's view, ``w(t) = 0.1·exp(-5(1 - t/T)^2)`` (the
sigmoid ramp-up over the whole stage) and the teacher an EMA of the student (momentum ``min(1 - 1/(t+1), 0.99)``).
The student predicts, as SSL4MIS tests the student.

The helpers here (:func:`input_noise`, :func:`ema_momentum`, :func:`softmax_mse`) are shared by the Mean Teacher
family (``ua-mt``, ``ict``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from arco.losses import SupervisedLoss
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput
from arco.methods.registry import register_method

__all__ = ["MeanTeacherConfig", "MeanTeacherMethod", "input_noise", "ema_momentum", "softmax_mse"]


@dataclass(frozen=True)
class MeanTeacherConfig:
    """Mean Teacher's parameters (SSL4MIS ``train_mean_teacher_2D.py`` defaults).

    Attributes:
        ema: teacher momentum (``--ema_decay 0.99``); the first steps use ``min(1 - 1/(t+1), ema)`` as SSL4MIS.
        consistency: final consistency weight (``--consistency 0.1``).
        rampup: fraction of the stage over which the weight follows the sigmoid ramp-up; SSL4MIS ramps over
            ``consistency_rampup`` 200 "epochs" of 150 iterations = its whole 30 000-iteration schedule, so 1.0.
        noise_std / noise_clip: teacher input noise ``clamp(noise_std·N(0, 1), ±noise_clip)`` (0.1 / 0.2).
        sup_weight: ``L_sup = sup_weight·(CE + Dice)``; 0.5 as in every SSL4MIS script.
    """

    ema: float = 0.99
    consistency: float = 0.1
    rampup: float = 1.0
    noise_std: float = 0.1
    noise_clip: float = 0.2
    sup_weight: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        for name in ("consistency", "rampup", "noise_std", "noise_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.sup_weight > 0:
            raise ValueError(f"sup_weight must be > 0, got {self.sup_weight}")


def input_noise(x: torch.Tensor, std: float, clip: float, generator: torch.Generator) -> torch.Tensor:
    """``clamp(std·N(0, 1), -clip, clip)`` of ``x``'s shape, drawn from ``generator`` (SSL4MIS teacher noise)."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    return (noise * std).clamp(-clip, clip)


def ema_momentum(ema: float, step: int) -> float:
    """``min(1 - 1/(step + 1), ema)``: the true average of the student's weights until the EMA is more accurate
    (Tarvainen & Valpola's code, SSL4MIS ``update_ema_variables``); step 0 copies the student."""
    return min(1.0 - 1.0 / (step + 1), ema)


def softmax_mse(logits: torch.Tensor, target_prob: torch.Tensor) -> torch.Tensor:
    """Element-wise ``(softmax(logits) - target_prob)^2``, ``(B, C, *S)`` (SSL4MIS ``softmax_mse_loss``)."""
    return (logits.float().softmax(1) - target_prob) ** 2


@register_method
class MeanTeacherMethod(MethodBase):
    """Mean Teacher: supervised loss plus a ramped MSE between the softmax of the student on the unlabeled images
    and that of its EMA teacher on a noisy copy. Predicts with the student (SSL4MIS evaluates the student)."""

    name = "mean-teacher"
    config_class = MeanTeacherConfig
    description = "Mean Teacher: L_sup + ramped MSE to an EMA teacher's softmax on noisy unlabeled images"
    paper = (
        "Tarvainen & Valpola, Mean teachers are better role models: Weight-averaged consistency targets improve "
        "semi-supervised deep learning results, NeurIPS 2017"
    )
    loss_names = ("loss_sup", "loss_cons")
    init_components = ("student",)
    segmenter = "student"
    spatial_dims = (2, 3)

    def __init__(self, cfg: MeanTeacherConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.add_backbone("student")
        self.add_teacher("teacher", "student")
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def consistency_weight(self, step: int) -> float:
        """``consistency · sigmoid ramp-up`` at ``step`` (a host float: no device sync)."""
        return rampup_weight(self.cfg.consistency, step, self.total_steps, self.cfg.rampup)

    def start_teacher(self, step: int) -> None:
        """At a stage's first step the teacher is the student (a stage initialised from a checkpoint loads only
        the student; SSL4MIS's first EMA update copies it too)."""
        if step == 0:
            self.update_teachers(0.0)

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        cfg, bl = self.cfg, batch.image_l.shape[0]
        self.start_teacher(step)
        logits = self.student(torch.cat([batch.image_l, batch.image_u])).logits
        loss_sup = self.sup(logits[:bl], batch.label_l)
        with torch.no_grad():
            noisy = batch.image_u + input_noise(batch.image_u, cfg.noise_std, cfg.noise_clip, self.generator)
            target = self.teacher(noisy).logits.float().softmax(1)
        loss_cons = softmax_mse(logits[bl:], target).mean()
        loss = loss_sup + self.consistency_weight(step) * loss_cons
        return StepOutput(loss, {"loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach()})

    def after_optimizer_step(self, step: int) -> None:
        self.update_teachers(ema_momentum(self.cfg.ema, step))
