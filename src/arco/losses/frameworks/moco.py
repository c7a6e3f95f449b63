"""MoCo v2's InfoNCE against a queue of momentum keys, on sampled pixels (``finetune.framework=moco``).

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020, eq. (1), with the MoCo v2
settings (Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", arXiv 2003.04297):
``L_q = -log exp(q.k+ / τ) / (exp(q.k+ / τ) + Σ_{k-} exp(q.k- / τ))`` with L2-normalised query ``q`` (the student),
its positive key ``k+`` (the momentum encoder, here the EMA teacher, at the same pixel) and negative keys from a FIFO
queue of earlier keys; τ = 0.2, queue K = 65 536 (MoCo v2's defaults).

Differences: each query meets ``num_negatives`` keys drawn from the queue by the sampler (NS / SG / SAG over
enqueue-order blocks, :func:`arco.sampling.bank.sample_bank`) instead of all K (the cost of K keys per pixel); the
queue starts empty (MoCo: random keys), so the first step has no negatives and a loss of 0; the momentum is the
method's ``ema`` (MoCo: 0.999).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arco.losses.frameworks._base import FRAMEWORKS, MASKED, KeyQueue, PixelFramework, masked_mean
from arco.losses.sampled_dot import sampled_dot

__all__ = ["MoCoLoss", "info_nce"]

TAU = 0.2  # MoCo v2
QUEUE = 65536  # MoCo / MoCo v2 K


def info_nce(q: torch.Tensor, k: torch.Tensor, neg: torch.Tensor, neg_ok: torch.Tensor, tau: float) -> torch.Tensor:
    """``(N,)``: InfoNCE of normalised ``q (N, d)`` with positive ``k (N, d)`` and negative similarities
    ``neg (N, K)`` (entries where ``neg_ok`` is False do not count)."""
    pos = (q * k).sum(-1, keepdim=True)
    logits = torch.cat([pos, neg.masked_fill(~neg_ok, MASKED * tau)], dim=-1) / tau
    return logits.logsumexp(-1) - logits[:, 0]


@FRAMEWORKS.register("moco")
class MoCoLoss(PixelFramework):
    """MoCo v2 on pixels (module docstring); ``options.tau`` (0.2), ``options.queue_size`` (65 536)."""

    name = "moco"
    source = "He et al., CVPR 2020; Chen et al., Improved Baselines with Momentum Contrastive Learning, 2020 (v2)"

    def __init__(self, num_classes: int, dim: int, **kwargs) -> None:
        super().__init__(num_classes, dim, **kwargs)
        size = int(self.option("queue_size", QUEUE))
        self.queue = KeyQueue(size, dim, num_classes * self.num_queries)

    def objective(self, query, key, ok, *, generator=None, strategy=None, update=False, head=None):
        if update:
            self.queue.flush()
        q, k = F.normalize(query, dim=-1), F.normalize(key, dim=-1)
        rows, queue_ok = self.queue.draw(q.shape[0], self.num_negatives, strategy or self.strategy,
                                         self.bank_blocks, generator)  # fmt: skip
        mask = queue_ok & ok[:, None]
        neg = sampled_dot(q, self.queue.table().float(), rows, mask)
        loss = masked_mean(info_nce(q, k, neg, mask, self.option("tau", TAU)), ok)
        if update:
            self.queue.stash(k, ok)
        return loss
