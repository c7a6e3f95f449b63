"""BYOL's predictor regression to the EMA target, on sampled pixels (``finetune.framework=byol``).

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, eq. (2): the online branch's prediction ``q_θ(z_θ)`` is
regressed on the target branch's projection ``z'_ξ`` (an exponential moving average of the online network) by
``L = ||q̄ - z̄'||² = 2 - 2 cos(q, z')`` (both L2-normalised); no negatives. The predictor is an MLP
``Linear -> BatchNorm -> ReLU -> Linear`` (BYOL: 4096 hidden units, output 256).

Here the online branch is the student's representation at a drawn pixel through the predictor
(:class:`arco.losses.frameworks._base.Predictor`, ``model.hidden_dim`` hidden units, output ``model.dim``), the
target the EMA teacher's at the same pixel. BYOL symmetrises the loss by swapping its two augmented views; both
views here are the same image (student vs teacher), so the loss is not symmetrised. The momentum is the method's
``ema`` (BYOL: 0.996, raised to 1 by a cosine schedule).
"""

from __future__ import annotations

import torch.nn.functional as F

from arco.losses.frameworks._base import FRAMEWORKS, PixelFramework, Predictor, masked_mean

__all__ = ["BYOLLoss"]


@FRAMEWORKS.register("byol")
class BYOLLoss(PixelFramework):
    """``mean over drawn pixels of 2 - 2 cos(predictor(student), teacher)`` (module docstring)."""

    name = "byol"
    source = "Grill et al., Bootstrap Your Own Latent, NeurIPS 2020"

    def build_head(self, dim, hidden):
        return Predictor(dim, hidden)

    def objective(self, query, key, ok, *, generator=None, strategy=None, update=False, head=None):
        if head is None:
            raise ValueError("BYOLLoss: needs its predictor (head=...); build it with build_head()")
        p = F.normalize(head(query, ok).float(), dim=-1)
        return masked_mean(2 - 2 * (p * F.normalize(key, dim=-1)).sum(-1), ok)
