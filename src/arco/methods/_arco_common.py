"""What ARCO's two stages share (``arco_pretrain.py``, ``arco.py``): the student/teacher backbones with the global
projector and predictor, the strongly augmented view and the student's forward on labeled + strong images.

The global heads follow the reference code (``ISD`` in ``code/model_2D.py``): the pooled bottleneck goes through
a projector ``Linear -> Linear`` (``MLP.f1 -> f2``) and, for the student only, a predictor ``Linear -> Linear``
(``latent_predictor``, whose BatchNorm and ReLU are commented out); no BatchNorm anywhere, so every embedding
depends on its own image only. ``model.heads: nonlinear`` puts a ReLU between the two layers of each (the paper's
"non-linear projector").
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from arco._checks import choice
from arco.augment import brightness_contrast, color_jitter, gaussian_blur
from arco.losses import SupervisedLoss
from arco.methods.base import MethodBase, ModelConfig
from arco.models import LinearHead, SegOutput, frozen_bn_stats

__all__ = ["STRONG_BN", "STRONG_VIEWS", "HEADS", "PAPER", "SHARED", "ArcoBase", "check_common", "pool", "strong"]

PAPER = (
    "You et al., Rethinking Semi-Supervised Medical Image Segmentation: A Variance-Reduction Perspective, NeurIPS 2023"
)
#: Modules stage 2 takes from stage 1's checkpoint.
SHARED = ("student", "teacher", "projector", "global_predictor", "teacher_projector")
#: How a strongly augmented batch passes the student's BatchNorm layers (see :func:`student_forward`).
STRONG_BN = ("joint", "separate", "clean")
#: The strongly augmented view's photometric part (CutMix is separate): ``reference`` = the ARCO / ReCo code's
#: (brightness/contrast factors in 1 ± strength with p 0.5, Gaussian blur sigma U(0.15, 1.15) px at 256 px with p 0.5,
#: scaled to the patch size), ``heavy`` = gamma + additive jitter (p 0.8) and blur sigma U(0.1, 2) px at any size
#: (arco 0.1's strong view), ``none``.
STRONG_VIEWS = ("reference", "heavy", "none")
#: The global heads: ``linear`` (the reference code) or ``nonlinear`` (a ReLU between the two layers).
HEADS = ("linear", "nonlinear")
_REFERENCE_SIZE = 256  # the reference code's ACDC slices: blur radii are in pixels of a 256 x 256 image


def pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool ``(B, C, *S) -> (B, C)``."""
    return x.flatten(2).mean(dim=2)


def strong(x: torch.Tensor, generator: torch.Generator, view: str, strength: float) -> torch.Tensor:
    """The photometric strong view of ``x`` (one of :data:`STRONG_VIEWS`)."""
    if view == "none":
        return x
    if view == "heavy":
        return gaussian_blur(color_jitter(x, generator=generator), generator=generator)
    scale = min(x.shape[2:]) / _REFERENCE_SIZE
    x = brightness_contrast(x, generator, strength=strength, p=0.5)
    return gaussian_blur(x, generator, sigma=(0.15 * scale, 1.15 * scale), p=0.5)


def check_common(stage: str, ema: float, sup_weight: float, rampup: float) -> None:
    if not 0 <= ema <= 1 or sup_weight <= 0 or not 0 <= rampup <= 1:
        raise ValueError(
            f"{stage}: ema must be in [0, 1], sup_weight > 0 and rampup in [0, 1]; got ema={ema}, "
            f"sup_weight={sup_weight}, rampup={rampup}"
        )


def student_forward(student: nn.Module, x_l: torch.Tensor, x_s: torch.Tensor, mode: str) -> SegOutput:
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


def levels(out: SegOutput) -> list[torch.Tensor]:
    """The five feature levels the reference fuses, coarse -> fine: the bottleneck, then the decoder levels."""
    return [out.bottleneck, *out.features]


class ArcoBase(MethodBase):
    """Student/teacher backbones and the global projector/predictor shared by both stages."""

    def __init__(self, cfg, num_classes: int, spatial_dims: int, model: ModelConfig) -> None:
        super().__init__(cfg, num_classes, spatial_dims, model)
        nonlinear = choice("model.heads", model.heads, HEADS) == "nonlinear"
        self.add_backbone("student")
        self.add_teacher("teacher", "student")
        self.add_component(
            "projector", LinearHead(self.student.bottleneck_channels, model.hidden_dim, model.dim, nonlinear)
        )
        self.add_component("global_predictor", LinearHead(model.dim, model.dim, model.dim, nonlinear))
        self.add_teacher("teacher_projector", "projector")
        # CE + Dice, a plain sum in the reference code (docs/methods.md)
        self.sup = SupervisedLoss(weight=cfg.sup_weight)

    def student_global(self, pooled: torch.Tensor) -> torch.Tensor:
        """The student's global embedding of pooled bottleneck rows: projector, then predictor."""
        return self.global_predictor(self.projector(pooled))
