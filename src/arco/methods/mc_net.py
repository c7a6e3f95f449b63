"""MC-Net (Wu et al., MICCAI 2021) and MC-Net+ (Wu et al., MedIA 2022): mutual consistency of decoders that differ
in their up-sampling, following the official code ``ycwu1997/MC-Net`` (``train_mcnet_2d.py`` / ``_3d.py``).

One encoder, D decoders. Decoder 1 is the ``student`` backbone's own decoder (2D: bilinear up-sampling, 3D:
transposed convolution, as MC-Net's first decoder); the others (``decoders``) are the same decoder code with the
next up-sampling of MC-Net's list (2D: transposed convolution, nearest; 3D: trilinear, nearest). With ``p_d`` the
softmax of decoder d on the whole batch (labeled + unlabeled) and ``s(p) = p^(1/T) / (p^(1/T) + (1-p)^(1/T))`` the
code's element-wise sharpening:

``L = w_s sum_d Dice(p_d(x_l), y) + lambda(t) sum_{i != j} mean (p_i - s(p_j))^2``

with T = 0.1. As in the code: only Dice supervises (the computed CE is not added), the consistency covers labeled
and unlabeled images, and the sharpened pseudo-labels are not detached. The code's 2D Dice ``1 - I/(|p|^2+|y|^2)``
equals ``0.5 + 0.5 * Dice`` (same gradient as ``0.5 * Dice``, weight ``lamda = 1``) and its 3D loss is ``lamda = 0.5``
times a foreground Dice, so ``w_s = 0.5`` times the soft Dice over all classes here (the 3D foreground-only Dice is
the one deviation). The official tests evaluate the first decoder alone: this predicts with ``student``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from arco.losses import dice_loss
from arco.methods._bydim import with_dim_defaults
from arco.methods._common import rampup_weight
from arco.methods.base import Batch, MethodBase, ModelConfig, StepOutput, build_backbone
from arco.methods.registry import register_method
from arco.models.multidecoder import DecoderBranch

__all__ = ["MCNetConfig", "MCNetMethod", "UP_MODES_BY_DIM", "sharpen_elementwise", "mutual_consistency"]

#: Decoder up-sampling in MC-Net's order (``up_type`` 1, 0, 2 in 2D; 0, 1, 2 in 3D); the first is the predictor.
UP_MODES_BY_DIM = {2: ("bilinear", "transpose", "nearest"), 3: ("transpose", "trilinear", "nearest")}

#: ``train_mcnet_2d.py``: ``--consistency 0.1``, ``--consistency_rampup 200`` epochs x 150 = the 30k schedule;
#: ``train_mcnet_3d.py``: ``--consistency 1``, ``--consistency_rampup 40`` epochs x 150 = 6k of 15k iterations.
DIM_DEFAULTS = {2: {"consistency": 0.1, "rampup": 1.0}, 3: {"consistency": 1.0, "rampup": 0.4}}


@dataclass(frozen=True)
class MCNetConfig:
    """Parameters of MC-Net (defaults: ``ycwu1997/MC-Net`` training scripts).

    Attributes:
        num_decoders: 2 = MC-Net (MICCAI 2021, the code's ``mcnet*_v1``), 3 = MC-Net+ (``mcnet*_v2``).
        consistency: lambda; ``None`` = the code's (0.1 in 2D, 1.0 in 3D).
        rampup: sigmoid ramp-up length as a fraction of the stage; ``None`` = the code's (1.0 in 2D, 0.4 in 3D).
        temperature: T of the sharpening (``--temperature 0.1``).
        sup_weight: w_s on the per-decoder Dice (see the module docstring: 0.5 reproduces both scripts).
    """

    num_decoders: int = 2
    consistency: float | None = None
    rampup: float | None = None
    temperature: float = 0.1
    sup_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.num_decoders not in (2, 3):
            raise ValueError(f"mc-net.num_decoders must be 2 (MC-Net) or 3 (MC-Net+), got {self.num_decoders}")
        for name in ("consistency", "rampup"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"mc-net.{name} must be >= 0, got {value}")
        if not self.temperature > 0:
            raise ValueError(f"mc-net.temperature must be > 0, got {self.temperature}")
        if not self.sup_weight > 0:
            raise ValueError(f"mc-net.sup_weight must be > 0, got {self.sup_weight}")


def sharpen_elementwise(prob: torch.Tensor, temperature: float) -> torch.Tensor:
    """MC-Net's sharpening ``p^(1/T) / (p^(1/T) + (1-p)^(1/T))`` of every probability on its own (for two classes
    it equals the class-normalised sharpening; for more it does not sum to 1, as in the code)."""
    a = prob.clamp(0, 1) ** (1.0 / temperature)
    return a / (a + (1 - prob).clamp(0, 1) ** (1.0 / temperature))


def mutual_consistency(probs: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """``sum_{i != j} mean (p_i - s(p_j))^2`` over decoder probabilities ``probs`` (gradients reach both sides)."""
    sharp = [sharpen_elementwise(p, temperature) for p in probs]
    return sum(((p - s) ** 2).mean() for i, p in enumerate(probs) for j, s in enumerate(sharp) if i != j)


@register_method
class MCNetMethod(MethodBase):
    """Shared encoder, decoders with different up-sampling, mutual consistency with sharpened pseudo-labels.
    Predicts with ``student`` (encoder + first decoder)."""

    name = "mc-net"
    config_class = MCNetConfig
    description = "mutual consistency of decoders with different up-sampling (MC-Net; 3 decoders = MC-Net+)"
    paper = (
        "Wu et al., Semi-supervised Left Atrium Segmentation with Mutual Consistency Training, MICCAI 2021 "
        "(MC-Net+: Mutual consistency learning for semi-supervised medical image segmentation, MedIA 2022)"
    )
    loss_names = ("loss_sup", "loss_cons")
    init_components = ("student", "decoders")
    segmenter = "student"
    spatial_dims = (2, 3)

    def __init__(self, cfg: MCNetConfig, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        self.cfg = cfg = with_dim_defaults(cfg, spatial_dims, DIM_DEFAULTS)
        modes = UP_MODES_BY_DIM[spatial_dims][: cfg.num_decoders]
        self.add_backbone("student", up_mode=modes[0])
        branches = [DecoderBranch(build_backbone(model, num_classes, spatial_dims, up_mode=m)[0]) for m in modes[1:]]
        self.add_component("decoders", nn.ModuleList(branches))

    def training_step(self, batch: Batch, step: int) -> StepOutput:
        bl = batch.image_l.shape[0]
        maps = self.student.encode(torch.cat([batch.image_l, batch.image_u]))
        logits = [self.student.decode(maps).logits, *(dec(maps).logits for dec in self.decoders)]
        loss_sup = self.cfg.sup_weight * sum(dice_loss(lg[:bl], batch.label_l) for lg in logits)
        loss_cons = mutual_consistency([lg.float().softmax(dim=1) for lg in logits], self.cfg.temperature)
        weight = rampup_weight(self.cfg.consistency, step, self.total_steps, self.cfg.rampup)
        loss = loss_sup + weight * loss_cons
        return StepOutput(loss, {"loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach()})
