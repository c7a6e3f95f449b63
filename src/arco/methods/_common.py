"""Small pieces several methods share: consistency-weight ramp-ups and softmax helpers (no method lives here)."""

from __future__ import annotations

import math

import torch

__all__ = ["sigmoid_rampup", "linear_rampup", "rampup_weight", "sharpen"]


def sigmoid_rampup(step: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(step / length, 0, 1)`` (Laine & Aila 2017; SSL4MIS ``ramps.py``);
    1 when ``length <= 0``."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def linear_rampup(step: float, length: float) -> float:
    """``clip(step / length, 0, 1)``; 1 when ``length <= 0``."""
    if length <= 0:
        return 1.0
    return min(max(step / length, 0.0), 1.0)


def rampup_weight(weight: float, step: int, total_steps: int, fraction: float, kind: str = "sigmoid") -> float:
    """``weight`` times a ramp-up over the first ``fraction`` of the stage's ``total_steps``.

    SSL4MIS ramps the consistency weight over ``consistency_rampup`` "epochs" of 150 iterations (200 epochs =
    30 000 iterations, i.e. the whole default schedule): ``fraction = 1.0`` reproduces that for any schedule
    length. A host-side float: the step counter lives on the host, so no device sync is involved.
    """
    length = fraction * total_steps
    ramp = sigmoid_rampup(step, length) if kind == "sigmoid" else linear_rampup(step, length)
    return weight * ramp


def sharpen(prob: torch.Tensor, temperature: float, dim: int = 1) -> torch.Tensor:
    """``p^(1/T) / sum p^(1/T)`` along ``dim`` (MC-Net / MixMatch sharpening)."""
    p = prob.clamp_min(1e-12) ** (1.0 / temperature)
    return p / p.sum(dim=dim, keepdim=True)
